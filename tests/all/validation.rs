//! Inputs are checked against the WIT signature before any guest code runs:
//! every type family, with the precise path and both types.

use serde_json::{Value, json};
use xcs::{ErrorKind, Limits, Operator};

use crate::fixtures;
use crate::util::{expect_kind, host, load, load_wat};

fn valid_all() -> Value {
    json!({
        "flag": true, "small": -128, "byte": 255, "short": -32768, "ushort": 65535,
        "int": -2147483648i64, "uint": 4294967295u64, "long": i64::MIN, "ulong": u64::MAX,
        "ratio": 0.5, "real": "-Infinity", "letter": "𝄞", "text": "héllo",
        "items": [1, 2, 3], "pair": [7, "seven"], "shape": {"circle": 2.5},
        "color": "green", "maybe": null, "outcome": {"err": "no"}, "perms": ["read", "write"],
    })
}

async fn every_family() -> Operator {
    load_wat(&host(), &fixtures::every_family())
        .await
        .expect("the fixture loads")
}

/// Calls the fixture with `valid_all()` where `field` is replaced by
/// `value`, and returns (path, expected, found) of the validation error.
async fn refused(operator: &Operator, field: &str, value: Value) -> (String, String, String) {
    let mut all = valid_all();
    all[field] = value;
    match expect_kind(
        operator
            .call(&json!({ "all": all }), &Limits::default())
            .await,
        ErrorKind::Validation,
    ) {
        xcs::Error::Validation {
            path,
            expected,
            found,
            ..
        } => (path, expected, found),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_valid_value_of_every_family_reaches_the_guest() {
    let operator = every_family().await;
    assert!(
        operator
            .signature()
            .to_string()
            .starts_with("func(all: record { flag: bool, small: s8,")
    );
    let output = operator
        .call(&json!({ "all": valid_all() }), &Limits::default())
        .await
        .unwrap();
    assert_eq!(output, Value::Null);
    // Positional form, and variants/options/results in their other shapes.
    let mut all = valid_all();
    all["shape"] = json!("point");
    all["maybe"] = json!(3);
    all["outcome"] = json!({"ok": 1});
    all["perms"] = json!([]);
    assert!(
        operator
            .call(&json!([all]), &Limits::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn scalars() {
    let op = every_family().await;
    let cases: &[(&str, Value, &str, &str)] = &[
        ("flag", json!(1), "bool", "number 1"),
        ("small", json!(128), "s8 (-128..=127)", "number 128"),
        ("byte", json!(-1), "u8 (0..=255)", "number -1"),
        (
            "short",
            json!(32768),
            "s16 (-32768..=32767)",
            "number 32768",
        ),
        ("ushort", json!(65536), "u16 (0..=65535)", "number 65536"),
        (
            "int",
            json!(2147483648u64),
            "s32 (-2147483648..=2147483647)",
            "number 2147483648",
        ),
        ("uint", json!(-1), "u32 (0..=4294967295)", "number -1"),
        ("long", json!("1"), "s64", "string \"1\""),
        (
            "ulong",
            json!(1.5),
            "u64 (0..=18446744073709551615)",
            "number 1.5",
        ),
        ("ratio", json!(1e39), "f32 (within ±3.4e38)", "number 1e+39"),
        (
            "real",
            json!("nan"),
            "f64 (a number, \"NaN\", \"Infinity\" or \"-Infinity\")",
            "string \"nan\"",
        ),
        (
            "letter",
            json!("ab"),
            "char (a string of one character)",
            "string \"ab\"",
        ),
        ("text", json!(null), "string", "null"),
    ];
    for (field, value, expected, found) in cases {
        let (path, got_expected, got_found) = refused(&op, field, value.clone()).await;
        assert_eq!(path, format!("$.all.{field}"));
        assert_eq!(
            (got_expected.as_str(), got_found.as_str()),
            (*expected, *found),
            "{field}"
        );
    }
}

#[tokio::test]
async fn lists_tuples_and_records() {
    let op = every_family().await;
    assert_eq!(
        refused(&op, "items", json!([1, 2, "3"])).await,
        ("$.all.items[2]".into(), "u32".into(), "string \"3\"".into())
    );
    assert_eq!(refused(&op, "items", json!({})).await.1, "list<u32>");
    assert_eq!(
        refused(&op, "pair", json!([1])).await.1,
        "tuple<u8, string>"
    );
    assert_eq!(refused(&op, "pair", json!([1, 2])).await.0, "$.all.pair[1]");
    let mut all = valid_all();
    all.as_object_mut().unwrap().remove("text");
    let error = expect_kind(
        op.call(&json!({ "all": all }), &Limits::default()).await,
        ErrorKind::Validation,
    );
    assert_eq!(
        error.to_string(),
        "fixture: $.all.text: expected string, found nothing (missing)"
    );
    let mut all = valid_all();
    all["extra"] = json!(1);
    let error = expect_kind(
        op.call(&json!({ "all": all }), &Limits::default()).await,
        ErrorKind::Validation,
    );
    assert!(
        error
            .to_string()
            .starts_with("fixture: $.all.extra: expected no such field"),
        "{error}"
    );
}

#[tokio::test]
async fn variants_enums_options_results_flags() {
    let op = every_family().await;
    assert_eq!(
        refused(&op, "shape", json!({"square": 1})).await.2,
        "\"square\""
    );
    assert_eq!(
        refused(&op, "shape", json!({"circle": "big"})).await.0,
        "$.all.shape.circle"
    );
    assert_eq!(
        refused(&op, "shape", json!({"point": 1})).await.1,
        "no payload (null)"
    );
    assert_eq!(
        refused(&op, "color", json!("blue")).await.1,
        "one of: red, green"
    );
    assert_eq!(
        refused(&op, "maybe", json!("x")).await,
        ("$.all.maybe".into(), "u32".into(), "string \"x\"".into())
    );
    assert_eq!(
        refused(&op, "outcome", json!({"ok": 1, "err": "x"}))
            .await
            .1,
        "result<u32, string>: {\"ok\": value} or {\"err\": value}"
    );
    assert_eq!(
        refused(&op, "outcome", json!({"err": 5})).await.0,
        "$.all.outcome.err"
    );
    assert_eq!(
        refused(&op, "perms", json!(["execute"])).await,
        (
            "$.all.perms[0]".into(),
            "a flag name (one of: read, write)".into(),
            "string \"execute\"".into()
        )
    );
}

#[tokio::test]
async fn arguments_shape_and_names() {
    let sum = load(&host(), xcs_tests::SUM).await;
    let error = expect_kind(
        sum.call(&json!({"xs": [1, 2, 3, "4"]}), &Limits::default())
            .await,
        ErrorKind::Validation,
    );
    assert_eq!(
        error.to_string(),
        "sum: $.xs[3]: expected s64, found string \"4\""
    );
    let error = expect_kind(
        sum.call(&json!({"ys": []}), &Limits::default()).await,
        ErrorKind::Validation,
    );
    assert_eq!(
        error.to_string(),
        "sum: $.ys: expected no such parameter (parameters: xs: list<s64>), found array of 0 element(s)"
    );
    let error = expect_kind(
        sum.call(&json!("1,2"), &Limits::default()).await,
        ErrorKind::Validation,
    );
    assert!(
        error
            .to_string()
            .starts_with("sum: $: expected an object or array of arguments"),
        "{error}"
    );
    expect_kind(
        sum.call(&json!([[1], [2]]), &Limits::default()).await,
        ErrorKind::Validation,
    );
}
