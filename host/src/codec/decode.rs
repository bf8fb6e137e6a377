//! WIT values → JSON, refused once they pass the output budget.

use serde_json::{Map, Number, Value};
use wasmtime::component::Val;

use super::{Budget, HEADER_BYTES, TooLarge};

/// Converts a value the guest returned into JSON, refusing it once it
/// passes `max_bytes`.
pub(crate) fn decode(val: &Val, max_bytes: u64) -> Result<Value, TooLarge> {
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

fn decode_val(val: &Val, budget: &mut Budget) -> Result<Value, TooLarge> {
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
