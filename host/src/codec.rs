//! JSON ⇄ WIT values, checked against the operator's signature.
//!
//! The JSON shape of each WIT type:
//!
//! | WIT | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | integers | a number with no fraction, range-checked for the width |
//! | `f32`, `f64` | a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `char` | a string of exactly one Unicode scalar value |
//! | `string` | a string |
//! | `list<T>`, `tuple<..>` | an array (a tuple's of exact length) |
//! | `record` | an object keyed by field name; a missing `option` field is `none` |
//! | `variant` | `{"case": payload}`, or `"case"` for a case without payload |
//! | `enum` | the case name as a string |
//! | `option<T>` | `null` or the value; `option<option<T>>` uses `{"some": v}` for the outer `some` |
//! | `result<T, E>` | `{"ok": v}` or `{"err": e}` (`null` for a missing payload) |
//! | `flags` | an array of the names that are set |
//!
//! Sizes are measured as the canonical size of the values (numbers at
//! their width, strings in bytes plus a pointer/length pair), as they are
//! built, so an oversized input is refused before it is all converted.

use serde_json::{Map, Number, Value};
use wasmtime::component::Val;

use crate::types::{Param, WitType};

/// Bytes a string or list header takes in the canonical ABI (pointer and
/// length, 32-bit each).
const HEADER_BYTES: u64 = 8;

/// Why a value was refused; the caller adds the operator's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodecError {
    Mismatch {
        path: String,
        expected: String,
        found: String,
    },
    TooLarge {
        size: u64,
        limit: u64,
    },
}

fn mismatch(path: &Path<'_>, expected: impl Into<String>, found: impl Into<String>) -> CodecError {
    CodecError::Mismatch {
        path: path.to_string(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// A JSON path, built lazily: only rendered when an error needs it.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => f.write_str("$"),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// Describes a JSON value briefly, for messages: its JSON type, and the
/// value itself when it is a short scalar.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() <= 16 => format!("string {s:?}"),
        Value::String(_) => "string".into(),
        Value::Array(items) => format!("array of {} element(s)", items.len()),
        Value::Object(_) => "object".into(),
    }
}

struct Budget {
    used: u64,
    limit: u64,
}

impl Budget {
    fn spend(&mut self, bytes: u64) -> Result<(), CodecError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            Err(CodecError::TooLarge {
                size: self.used,
                limit: self.limit,
            })
        } else {
            Ok(())
        }
    }
}

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
    if params.is_empty() {
        return "none".into();
    }
    params
        .iter()
        .map(|param| format!("{}: {}", param.name, param.ty))
        .collect::<Vec<_>>()
        .join(", ")
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

/// Checks that `value` fits `ty` (used for graph literals and inputs).
pub(crate) fn check_value(ty: &WitType, value: &Value) -> Result<(), CodecError> {
    let mut budget = Budget {
        used: 0,
        limit: u64::MAX,
    };
    encode(ty, value, &Path::Root, &mut budget).map(drop)
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Mismatch {
                path,
                expected,
                found,
            } => write!(f, "{path}: expected {expected}, found {found}"),
            CodecError::TooLarge { size, limit } => {
                write!(f, "at least {size} bytes, over the limit of {limit}")
            }
        }
    }
}

/// Converts a value the guest returned into JSON, refusing it once it
/// passes `max_bytes`.
pub(crate) fn decode(val: &Val, max_bytes: u64) -> Result<Value, CodecError> {
    let mut budget = Budget {
        used: 0,
        limit: max_bytes,
    };
    decode_val(val, &mut budget)
}

fn float_json(f: f64) -> Value {
    if f.is_nan() {
        Value::String("NaN".into())
    } else if f.is_infinite() {
        Value::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

fn decode_val(val: &Val, budget: &mut Budget) -> Result<Value, CodecError> {
    Ok(match val {
        Val::Bool(b) => {
            budget.spend(1)?;
            Value::Bool(*b)
        }
        Val::S8(n) => {
            budget.spend(1)?;
            (*n).into()
        }
        Val::U8(n) => {
            budget.spend(1)?;
            (*n).into()
        }
        Val::S16(n) => {
            budget.spend(2)?;
            (*n).into()
        }
        Val::U16(n) => {
            budget.spend(2)?;
            (*n).into()
        }
        Val::S32(n) => {
            budget.spend(4)?;
            (*n).into()
        }
        Val::U32(n) => {
            budget.spend(4)?;
            (*n).into()
        }
        Val::S64(n) => {
            budget.spend(8)?;
            (*n).into()
        }
        Val::U64(n) => {
            budget.spend(8)?;
            (*n).into()
        }
        Val::Float32(f) => {
            budget.spend(4)?;
            float_json(f64::from(*f))
        }
        Val::Float64(f) => {
            budget.spend(8)?;
            float_json(*f)
        }
        Val::Char(c) => {
            budget.spend(4)?;
            Value::String(c.to_string())
        }
        Val::String(s) => {
            budget.spend(HEADER_BYTES + s.len() as u64)?;
            Value::String(s.clone())
        }
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            budget.spend(HEADER_BYTES)?;
            Value::Array(
                items
                    .iter()
                    .map(|item| decode_val(item, budget))
                    .collect::<Result<_, _>>()?,
            )
        }
        Val::Record(fields) => {
            let mut object = Map::with_capacity(fields.len());
            for (name, field) in fields {
                object.insert(name.clone(), decode_val(field, budget)?);
            }
            Value::Object(object)
        }
        Val::Variant(name, payload) => {
            budget.spend(4)?;
            match payload {
                Some(payload) => single(name, decode_val(payload, budget)?),
                None => Value::String(name.clone()),
            }
        }
        Val::Enum(name) => {
            budget.spend(4)?;
            Value::String(name.clone())
        }
        Val::Option(None) => {
            budget.spend(1)?;
            Value::Null
        }
        Val::Option(Some(inner)) => {
            budget.spend(1)?;
            let value = decode_val(inner, budget)?;
            if matches!(**inner, Val::Option(_)) {
                single("some", value)
            } else {
                value
            }
        }
        Val::Result(result) => {
            budget.spend(1)?;
            let (name, payload) = match result {
                Ok(payload) => ("ok", payload),
                Err(payload) => ("err", payload),
            };
            let payload = match payload {
                Some(payload) => decode_val(payload, budget)?,
                None => Value::Null,
            };
            single(name, payload)
        }
        Val::Flags(names) => {
            budget.spend(4)?;
            Value::Array(names.iter().cloned().map(Value::String).collect())
        }
        Val::Map(entries) => {
            budget.spend(HEADER_BYTES)?;
            Value::Array(
                entries
                    .iter()
                    .map(|(key, value)| {
                        Ok(Value::Array(vec![
                            decode_val(key, budget)?,
                            decode_val(value, budget)?,
                        ]))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        // Signatures with these are refused when the operator is loaded.
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => Value::Null,
    })
}

fn single(name: &str, value: Value) -> Value {
    let mut object = Map::with_capacity(1);
    object.insert(name.to_owned(), value);
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(types: &[(&str, WitType)]) -> Vec<Param> {
        types
            .iter()
            .map(|(name, ty)| Param {
                name: (*name).into(),
                ty: ty.clone(),
            })
            .collect()
    }

    fn err(ty: WitType, input: Value) -> (String, String, String) {
        match encode_params(&params(&[("x", ty)]), &json!({ "x": input }), u64::MAX) {
            Err(CodecError::Mismatch {
                path,
                expected,
                found,
            }) => (path, expected, found),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn list_element_path_and_types() {
        let (path, expected, found) =
            err(WitType::List(Box::new(WitType::S64)), json!([1, 2, 3, "4"]));
        assert_eq!(path, "$.x[3]");
        assert_eq!(expected, "s64");
        assert_eq!(found, "string \"4\"");
    }

    #[test]
    fn integer_ranges() {
        assert!(matches!(
            encode_params(&params(&[("x", WitType::U8)]), &json!([255]), u64::MAX).as_deref(),
            Ok([Val::U8(255)])
        ));
        let (_, expected, found) = err(WitType::U8, json!(256));
        assert_eq!(
            (expected.as_str(), found.as_str()),
            ("u8 (0..=255)", "number 256")
        );
        let (_, expected, _) = err(WitType::S8, json!(-129));
        assert_eq!(expected, "s8 (-128..=127)");
        let (_, expected, _) = err(WitType::U64, json!(-1));
        assert_eq!(expected, "u64 (0..=18446744073709551615)");
        let (_, _, found) = err(WitType::S32, json!(1.5));
        assert_eq!(found, "number 1.5");
        assert!(
            encode_params(
                &params(&[("x", WitType::U64)]),
                &json!([u64::MAX]),
                u64::MAX
            )
            .is_ok()
        );
    }

    #[test]
    fn input_budget_stops_early() {
        let list = WitType::List(Box::new(WitType::S64));
        let input = json!([(0..1000).collect::<Vec<i64>>()]);
        match encode_params(&params(&[("xs", list)]), &input, 800) {
            Err(CodecError::TooLarge { size, limit }) => {
                assert_eq!(limit, 800);
                assert!(size > 800 && size <= 808, "{size}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trips_every_family() {
        let ty = WitType::Record(vec![
            ("flag".into(), WitType::Bool),
            ("letter".into(), WitType::Char),
            ("ratio".into(), WitType::F32),
            (
                "pair".into(),
                WitType::Tuple(vec![WitType::U16, WitType::String]),
            ),
            (
                "shape".into(),
                WitType::Variant(vec![
                    ("circle".into(), Some(WitType::F64)),
                    ("point".into(), None),
                ]),
            ),
            (
                "color".into(),
                WitType::Enum(vec!["red".into(), "green".into()]),
            ),
            (
                "maybe".into(),
                WitType::Option(Box::new(WitType::Option(Box::new(WitType::S8)))),
            ),
            (
                "outcome".into(),
                WitType::Result {
                    ok: None,
                    err: Some(Box::new(WitType::String)),
                },
            ),
            (
                "perms".into(),
                WitType::Flags(vec!["read".into(), "write".into()]),
            ),
            ("missing".into(), WitType::Option(Box::new(WitType::U32))),
        ]);
        let input = json!({
            "flag": true, "letter": "é", "ratio": "NaN", "pair": [7, "x"],
            "shape": {"circle": 1.5}, "color": "green", "maybe": {"some": null},
            "outcome": {"err": "bad"}, "perms": ["write"],
        });
        let vals = encode_params(&params(&[("r", ty)]), &json!([input]), u64::MAX).expect("valid");
        let output = decode(&vals[0], u64::MAX).expect("decodes");
        let mut expected = input;
        expected["missing"] = Value::Null;
        assert_eq!(output, expected);
    }

    #[test]
    fn record_and_variant_errors_name_the_place() {
        let record = WitType::Record(vec![("a".into(), WitType::U32)]);
        let (path, expected, _) = err(record.clone(), json!({"a": 1, "b": 2}));
        assert_eq!(
            (path.as_str(), expected.as_str()),
            ("$.x.b", "no such field (fields: a)")
        );
        let (path, _, found) = err(record, json!({}));
        assert_eq!(
            (path.as_str(), found.as_str()),
            ("$.x.a", "nothing (missing)")
        );
        let variant = WitType::Variant(vec![("on".into(), None)]);
        let (_, _, found) = err(variant, json!("off"));
        assert_eq!(found, "\"off\"");
    }

    #[test]
    fn arguments_by_position_or_name() {
        let ps = params(&[
            ("a", WitType::String),
            ("b", WitType::Option(Box::new(WitType::U8))),
        ]);
        assert_eq!(
            encode_params(&ps, &json!({"a": "x"}), u64::MAX)
                .expect("ok")
                .len(),
            2
        );
        assert!(matches!(
            encode_params(&ps, &json!(["x"]), u64::MAX),
            Err(CodecError::Mismatch { ref path, .. }) if path == "$"
        ));
        assert!(matches!(
            encode_params(&ps, &json!({"a": "x", "c": 1}), u64::MAX),
            Err(CodecError::Mismatch { ref path, .. }) if path == "$.c"
        ));
        assert!(
            encode_params(&[], &Value::Null, u64::MAX)
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn output_budget() {
        let big = Val::List((0..100).map(Val::U64).collect());
        assert!(matches!(
            decode(&big, 100),
            Err(CodecError::TooLarge { limit: 100, .. })
        ));
        assert!(decode(&big, 808).is_ok());
    }

    #[test]
    fn integers_rounded_by_json_parsing_are_refused() {
        for (ty, text) in [
            (WitType::S64, "-9223372036854775809"),
            (WitType::U64, "1e19"),
        ] {
            let value: Value = serde_json::from_str(text).expect("parses as a float");
            let (_, _, found) = err(ty, value);
            assert!(found.starts_with("number "), "{text}: {found}");
        }
    }
}
