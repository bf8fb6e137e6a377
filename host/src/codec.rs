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

use serde_json::Value;

use crate::error::Error;

mod decode;
mod encode;

pub(crate) use decode::decode;
pub(crate) use encode::{check_field, check_value, encode_params};

/// Bytes a string or list header takes in the canonical ABI (pointer and
/// length, 32-bit each).
const HEADER_BYTES: u64 = 8;

/// A value past its size budget: at least `size` bytes, over `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) size: u64,
    pub(crate) limit: u64,
}

impl TooLarge {
    /// The error of an operator whose output is too large.
    pub(crate) fn into_output_error(self, operator: &str) -> Error {
        Error::Memory {
            operator: operator.to_owned(),
            what: "output",
            requested: self.size,
            limit: self.limit,
        }
    }
}

/// Why an input value was refused; the caller adds the operator's name.
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

impl From<TooLarge> for CodecError {
    fn from(TooLarge { size, limit }: TooLarge) -> Self {
        CodecError::TooLarge { size, limit }
    }
}

impl CodecError {
    /// The error of a call of `operator` with this input.
    pub(crate) fn into_error(self, operator: &str) -> Error {
        let operator = operator.to_owned();
        match self {
            CodecError::Mismatch {
                path,
                expected,
                found,
            } => Error::Validation {
                operator,
                path,
                expected,
                found,
            },
            CodecError::TooLarge { size, limit } => Error::InputTooLarge {
                operator,
                size,
                limit,
            },
        }
    }
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
    fn spend(&mut self, bytes: u64) -> Result<(), TooLarge> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            Err(TooLarge {
                size: self.used,
                limit: self.limit,
            })
        } else {
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use wasmtime::component::Val;

    use crate::types::{Param, WitType};

    fn params(types: &[(&str, WitType)]) -> Vec<Param> {
        types
            .iter()
            .map(|(name, ty)| Param {
                name: (*name).into(),
                ty: ty.clone(),
                wit: ty.to_string(),
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
            Err(TooLarge { limit: 100, .. })
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
