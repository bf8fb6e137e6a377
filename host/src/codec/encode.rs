//! JSON → WIT values, checked against the types of the signature, with
//! the size budget spent as the values are built.

use serde_json::Value;
use wasmtime::component::Val;

use super::{Budget, CodecError, HEADER_BYTES, Path, describe, mismatch};
use crate::error::list_or_none;
use crate::types::{Param, WitType};

/// Converts a call's input into arguments for `invoke`.
///
/// The input is an object keyed by parameter name, or an array in parameter
/// order. An operator without parameters also accepts `null`.
pub(crate) fn encode_params(
    params: &[Param],
    input: &Value,
    max_bytes: u64,
) -> Result<Vec<Val>, CodecError> {
    let mut budget = Budget {
        used: 0,
        limit: max_bytes,
    };
    let root = Path::Root;
    match input {
        Value::Array(items) => {
            if items.len() != params.len() {
                return Err(mismatch(
                    &root,
                    format!(
                        "an array of {} argument(s) ({})",
                        params.len(),
                        names(params)
                    ),
                    describe(input),
                ));
            }
            params
                .iter()
                .zip(items)
                .enumerate()
                .map(|(index, (param, item))| {
                    encode(&param.ty, item, &Path::Index(&root, index), &mut budget)
                })
                .collect()
        }
        Value::Object(fields) => {
            if let Some(unknown) = fields
                .keys()
                .find(|key| !params.iter().any(|param| &param.name == *key))
            {
                return Err(mismatch(
                    &Path::Field(&root, unknown),
                    format!("no such parameter (parameters: {})", names(params)),
                    describe(&fields[unknown]),
                ));
            }
            params
                .iter()
                .map(|param| {
                    let path = Path::Field(&root, &param.name);
                    match fields.get(&param.name) {
                        Some(value) => encode(&param.ty, value, &path, &mut budget),
                        None if matches!(param.ty, WitType::Option(_)) => Ok(Val::Option(None)),
                        None => Err(mismatch(&path, param.ty.to_string(), "nothing (missing)")),
                    }
                })
                .collect()
        }
        Value::Null if params.is_empty() => Ok(Vec::new()),
        other => Err(mismatch(
            &root,
            format!("an object or array of arguments ({})", names(params)),
            describe(other),
        )),
    }
}

fn names(params: &[Param]) -> String {
    list_or_none(
        params
            .iter()
            .map(|param| format!("{}: {}", param.name, param.ty)),
    )
}

fn integer<T: TryFrom<i128>>(
    ty: &WitType,
    value: &Value,
    path: &Path<'_>,
    range: (i128, i128),
) -> Result<T, CodecError> {
    let expected = || format!("{} ({}..={})", ty.family(), range.0, range.1);
    let Value::Number(number) = value else {
        return Err(mismatch(path, ty.family(), describe(value)));
    };
    let wide: i128 = if let Some(n) = number.as_i64() {
        n.into()
    } else if let Some(n) = number.as_u64() {
        n.into()
    } else {
        // A float: accepted only when it is a whole number in range, and
        // below 2^53, so JSON parsing cannot have rounded it.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        match number.as_f64() {
            Some(f)
                if f.fract() == 0.0
                    && f.abs() < EXACT
                    && f >= range.0 as f64
                    && f <= range.1 as f64 =>
            {
                f as i128
            }
            _ => return Err(mismatch(path, expected(), describe(value))),
        }
    };
    T::try_from(wide).map_err(|_| mismatch(path, expected(), describe(value)))
}

fn float(ty: &WitType, value: &Value, path: &Path<'_>) -> Result<f64, CodecError> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| mismatch(path, ty.family(), describe(value))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(mismatch(
                path,
                format!(
                    "{} (a number, \"NaN\", \"Infinity\" or \"-Infinity\")",
                    ty.family()
                ),
                describe(value),
            )),
        },
        _ => Err(mismatch(path, ty.family(), describe(value))),
    }
}

fn encode(
    ty: &WitType,
    value: &Value,
    path: &Path<'_>,
    budget: &mut Budget,
) -> Result<Val, CodecError> {
    Ok(match ty {
        WitType::Bool => {
            budget.spend(1)?;
            match value {
                Value::Bool(b) => Val::Bool(*b),
                _ => return Err(mismatch(path, "bool", describe(value))),
            }
        }
        WitType::S8 => {
            budget.spend(1)?;
            Val::S8(integer(ty, value, path, (i8::MIN.into(), i8::MAX.into()))?)
        }
        WitType::U8 => {
            budget.spend(1)?;
            Val::U8(integer(ty, value, path, (0, u8::MAX.into()))?)
        }
        WitType::S16 => {
            budget.spend(2)?;
            Val::S16(integer(
                ty,
                value,
                path,
                (i16::MIN.into(), i16::MAX.into()),
            )?)
        }
        WitType::U16 => {
            budget.spend(2)?;
            Val::U16(integer(ty, value, path, (0, u16::MAX.into()))?)
        }
        WitType::S32 => {
            budget.spend(4)?;
            Val::S32(integer(
                ty,
                value,
                path,
                (i32::MIN.into(), i32::MAX.into()),
            )?)
        }
        WitType::U32 => {
            budget.spend(4)?;
            Val::U32(integer(ty, value, path, (0, u32::MAX.into()))?)
        }
        WitType::S64 => {
            budget.spend(8)?;
            Val::S64(integer(
                ty,
                value,
                path,
                (i64::MIN.into(), i64::MAX.into()),
            )?)
        }
        WitType::U64 => {
            budget.spend(8)?;
            Val::U64(integer(ty, value, path, (0, u64::MAX.into()))?)
        }
        WitType::F32 => {
            budget.spend(4)?;
            let f = float(ty, value, path)?;
            if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                return Err(mismatch(path, "f32 (within ±3.4e38)", describe(value)));
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "range checked above; f32 rounding is the point"
            )]
            Val::Float32(f as f32)
        }
        WitType::F64 => {
            budget.spend(8)?;
            Val::Float64(float(ty, value, path)?)
        }
        WitType::Char => {
            budget.spend(4)?;
            let found = || describe(value);
            let Value::String(s) = value else {
                return Err(mismatch(path, "char", found()));
            };
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(mismatch(path, "char (a string of one character)", found())),
            }
        }
        WitType::String => match value {
            Value::String(s) => {
                budget.spend(HEADER_BYTES + s.len() as u64)?;
                Val::String(s.clone())
            }
            _ => return Err(mismatch(path, "string", describe(value))),
        },
        WitType::List(element) => match value {
            Value::Array(items) => {
                budget.spend(HEADER_BYTES)?;
                let mut vals = Vec::with_capacity(items.len().min(1 << 16));
                for (index, item) in items.iter().enumerate() {
                    vals.push(encode(element, item, &Path::Index(path, index), budget)?);
                }
                Val::List(vals)
            }
            _ => return Err(mismatch(path, ty.to_string(), describe(value))),
        },
        WitType::Record(fields) => {
            let Value::Object(object) = value else {
                return Err(mismatch(path, ty.to_string(), describe(value)));
            };
            if let Some(unknown) = object
                .keys()
                .find(|key| !fields.iter().any(|(name, _)| name == *key))
            {
                let known: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
                return Err(mismatch(
                    &Path::Field(path, unknown),
                    format!("no such field (fields: {})", known.join(", ")),
                    describe(&object[unknown]),
                ));
            }
            let mut vals = Vec::with_capacity(fields.len());
            for (name, field_ty) in fields {
                let field_path = Path::Field(path, name);
                let val = match object.get(name) {
                    Some(field) => encode(field_ty, field, &field_path, budget)?,
                    None if matches!(field_ty, WitType::Option(_)) => {
                        budget.spend(1)?;
                        Val::Option(None)
                    }
                    None => {
                        return Err(mismatch(
                            &field_path,
                            field_ty.to_string(),
                            "nothing (missing)",
                        ));
                    }
                };
                vals.push((name.clone(), val));
            }
            Val::Record(vals)
        }
        WitType::Tuple(types) => match value {
            Value::Array(items) if items.len() == types.len() => Val::Tuple(
                types
                    .iter()
                    .zip(items)
                    .enumerate()
                    .map(|(index, (ty, item))| encode(ty, item, &Path::Index(path, index), budget))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(mismatch(path, ty.to_string(), describe(value))),
        },
        WitType::Variant(cases) => {
            budget.spend(4)?;
            let case_names = || {
                let names: Vec<&str> = cases.iter().map(|(name, _)| name.as_str()).collect();
                names.join(", ")
            };
            let (name, payload) = match value {
                Value::String(name) => (name, None),
                Value::Object(object) if object.len() == 1 => {
                    let (name, payload) = object.iter().next().expect("one entry");
                    (name, Some(payload))
                }
                _ => {
                    return Err(mismatch(
                        path,
                        format!(
                            "variant (one of: {}), as {{\"case\": payload}} or \"case\"",
                            case_names()
                        ),
                        describe(value),
                    ));
                }
            };
            let Some((_, case_ty)) = cases.iter().find(|(case, _)| case == name) else {
                return Err(mismatch(
                    path,
                    format!("a case of the variant (one of: {})", case_names()),
                    format!("{name:?}"),
                ));
            };
            let case_path = Path::Field(path, name);
            let payload = match (case_ty, payload) {
                (Some(case_ty), Some(payload)) => {
                    Some(Box::new(encode(case_ty, payload, &case_path, budget)?))
                }
                (Some(case_ty), None) => {
                    return Err(mismatch(
                        &case_path,
                        case_ty.to_string(),
                        "nothing (missing payload)",
                    ));
                }
                (None, None | Some(Value::Null)) => None,
                (None, Some(other)) => {
                    return Err(mismatch(&case_path, "no payload (null)", describe(other)));
                }
            };
            Val::Variant(name.clone(), payload)
        }
        WitType::Enum(names) => {
            budget.spend(4)?;
            match value {
                Value::String(name) if names.contains(name) => Val::Enum(name.clone()),
                _ => {
                    return Err(mismatch(
                        path,
                        format!("one of: {}", names.join(", ")),
                        describe(value),
                    ));
                }
            }
        }
        WitType::Option(inner) => {
            budget.spend(1)?;
            match (value, inner.as_ref()) {
                (Value::Null, _) => Val::Option(None),
                (Value::Object(object), WitType::Option(_))
                    if object.len() == 1 && object.contains_key("some") =>
                {
                    Val::Option(Some(Box::new(encode(
                        inner,
                        &object["some"],
                        &Path::Field(path, "some"),
                        budget,
                    )?)))
                }
                (_, WitType::Option(_)) => {
                    return Err(mismatch(
                        path,
                        format!("{ty}: null or {{\"some\": value}}"),
                        describe(value),
                    ));
                }
                (value, inner) => Val::Option(Some(Box::new(encode(inner, value, path, budget)?))),
            }
        }
        WitType::Result { ok, err } => {
            budget.spend(1)?;
            let expected = || format!("{ty}: {{\"ok\": value}} or {{\"err\": value}}");
            let Value::Object(object) = value else {
                return Err(mismatch(path, expected(), describe(value)));
            };
            let side = |name: &'static str,
                        side_ty: &Option<Box<WitType>>,
                        payload: &Value,
                        budget: &mut Budget| {
                let side_path = Path::Field(path, name);
                match (side_ty, payload) {
                    (Some(side_ty), payload) => Ok(Some(Box::new(encode(
                        side_ty, payload, &side_path, budget,
                    )?))),
                    (None, Value::Null) => Ok(None),
                    (None, other) => {
                        Err(mismatch(&side_path, "no payload (null)", describe(other)))
                    }
                }
            };
            match (object.len(), object.get("ok"), object.get("err")) {
                (1, Some(payload), None) => Val::Result(Ok(side("ok", ok, payload, budget)?)),
                (1, None, Some(payload)) => Val::Result(Err(side("err", err, payload, budget)?)),
                _ => return Err(mismatch(path, expected(), describe(value))),
            }
        }
        WitType::Flags(names) => {
            budget.spend(4)?;
            let Value::Array(items) = value else {
                return Err(mismatch(
                    path,
                    format!("{ty}: an array of flag names"),
                    describe(value),
                ));
            };
            let mut set = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                match item {
                    Value::String(name) if names.contains(name) => {
                        if !set.contains(name) {
                            set.push(name.clone());
                        }
                    }
                    _ => {
                        return Err(mismatch(
                            &Path::Index(path, index),
                            format!("a flag name (one of: {})", names.join(", ")),
                            describe(item),
                        ));
                    }
                }
            }
            Val::Flags(set)
        }
    })
}

/// Checks that `value` fits `ty` (used for graph literals).
pub(crate) fn check_value(ty: &WitType, value: &Value) -> Result<(), CodecError> {
    check_at(ty, value, &Path::Root)
}

/// Checks that `value`, the field `name` of an object, fits `ty` (used for
/// graph inputs: paths in errors start `$.name`).
pub(crate) fn check_field(ty: &WitType, name: &str, value: &Value) -> Result<(), CodecError> {
    check_at(ty, value, &Path::Field(&Path::Root, name))
}

fn check_at(ty: &WitType, value: &Value, path: &Path<'_>) -> Result<(), CodecError> {
    let mut budget = Budget {
        used: 0,
        limit: u64::MAX,
    };
    encode(ty, value, path, &mut budget).map(drop)
}
