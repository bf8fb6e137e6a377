//! The result cache's key: the operator's digest, the limits that decide
//! whether a call succeeds, and the input in a canonical form.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use crate::limits::Limits;

/// Key of the result cache: the operator (for metrics), its digest and the
/// canonical encoding of the input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ResultKey {
    pub(crate) operator: Arc<str>,
    pub(crate) key: String,
}

/// A cached result and when it was stored (on tokio's clock, so expiry is
/// testable with a paused clock).
pub(crate) type CachedResult = (Instant, Arc<Value>);

/// Inputs nested deeper than this are not cached: the key is built by
/// recursion, before the input is checked against the signature.
const MAX_KEY_DEPTH: usize = 64;

impl ResultKey {
    /// The key of a call of `operator` (whose digest is `digest`) with
    /// `input` under `limits`; `None` when the input is too deeply nested
    /// to key (the call then runs uncached).
    pub(crate) fn new(
        operator: &Arc<str>,
        digest: &str,
        policy: u64,
        input: &Value,
        limits: &Limits,
    ) -> Option<ResultKey> {
        let mut key = String::with_capacity(digest.len() + 80);
        key.push_str(digest);
        // Limits and policies decide whether a call succeeds: calls under
        // others must not share an execution (single flight) or, in
        // principle, a result.
        // Every limit that can change an outcome (the seed cannot: a
        // deterministic operator's result does not depend on it).
        // Named field by field: a new limit does not compile until it is
        // here or said not to matter.
        let Limits {
            timeout,
            fuel,
            max_memory_bytes,
            max_input_bytes,
            max_output_bytes,
            max_table_elements,
            max_instances,
            max_log_bytes,
            seed: _,
        } = limits;
        let _ = write!(
            key,
            "\n{policy:x}/{timeout:?}/{fuel:?}/{max_memory_bytes}/{max_input_bytes}/\
             {max_output_bytes}/{max_table_elements}/{max_instances}/{max_log_bytes}\n",
        );
        canonical(input, &mut key)?;
        Some(ResultKey {
            operator: operator.clone(),
            key,
        })
    }

    /// The bytes this entry is charged in the cache's bound.
    pub(crate) fn weight(&self, value: &Value) -> u32 {
        let bytes = self.key.len() + value.to_string().len();
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// JSON with object keys sorted, whatever order the input had; `None` when
/// the input is nested deeper than [`MAX_KEY_DEPTH`].
fn canonical(value: &Value, out: &mut String) -> Option<()> {
    canonical_at(value, out, 0)
}

fn canonical_at(value: &Value, out: &mut String, depth: usize) -> Option<()> {
    if depth > MAX_KEY_DEPTH {
        return None;
    }
    match value {
        Value::Object(object) => {
            let mut entries: Vec<_> = object.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_at(value, out, depth + 1)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canonical_at(item, out, depth + 1)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut a = String::new();
        canonical(
            &json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": "s"}}),
            &mut a,
        )
        .expect("shallow");
        assert_eq!(a, r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#);
        let mut b = String::new();
        canonical(
            &json!({"a": {"x": "s", "y": [1, {"p": 1, "q": 2}]}, "b": 1}),
            &mut b,
        )
        .expect("shallow");
        assert_eq!(a, b);
    }

    #[test]
    fn deep_inputs_are_not_keyed() {
        let mut deep = Value::Null;
        for _ in 0..1000 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(
            canonical(&deep, &mut String::new()),
            None,
            "too deep to key"
        );
        let name: Arc<str> = Arc::from("op");
        assert_eq!(
            ResultKey::new(&name, "sha256:00", 0, &deep, &Limits::default()),
            None
        );
        // Tear down without recursion: a test thread's stack is small.
        while let Value::Array(mut items) = deep {
            deep = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn limits_are_part_of_the_key() {
        let name: Arc<str> = Arc::from("op");
        let input = json!({"x": 1});
        let short = Limits::default().timeout(std::time::Duration::from_secs(1));
        let a = ResultKey::new(&name, "sha256:00", 0, &input, &Limits::default());
        let b = ResultKey::new(&name, "sha256:00", 0, &input, &short);
        let c = ResultKey::new(&name, "sha256:00", 1, &input, &Limits::default());
        assert!(a.is_some());
        assert_ne!(a, b);
        assert_ne!(a, c, "policies are part of the key");
        for other in [
            Limits::default().max_table_elements(1),
            Limits::default().max_instances(1),
            Limits::default().max_log_bytes(1),
        ] {
            let d = ResultKey::new(&name, "sha256:00", 0, &input, &other);
            assert_ne!(a, d, "{other:?}");
        }
        let reseeded = Limits::default().seed(7);
        assert_eq!(
            a,
            ResultKey::new(&name, "sha256:00", 0, &input, &reseeded),
            "not the seed"
        );
    }
}
