//! Property tests of the value codec through the public API, against real
//! components: random WIT types, random values of them, and random ways to
//! get a value wrong.
//!
//! Each case builds an identity operator for its type
//! (`invoke(x: list<T>) -> result<list<T>, error>`, see
//! [`fixtures::identity`]): the guest hands back what the host lowered, so
//! a call is JSON → WIT → guest memory → WIT → JSON, a true round trip.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Union;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use xcs::{Error, ErrorKind, Limits};

use crate::fixtures;
use crate::util::{host, load_wat, uncached_host};

/// Cases per property: each compiles a component, so keep them modest.
const CASES: u32 = 256;

/// A WIT type; nominal types name their fields `f0..`, cases `c0..`,
/// enum cases `e0..` and flags `g0..`.
#[derive(Debug, Clone)]
enum Ty {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<Ty>),
    Record(Vec<Ty>),
    Tuple(Vec<Ty>),
    Variant(Vec<Option<Ty>>),
    Enum(usize),
    Option(Box<Ty>),
    Result(Option<Box<Ty>>, Option<Box<Ty>>),
    Flags(usize),
}

fn any_ty() -> impl Strategy<Value = Ty> {
    let leaf = prop_oneof![
        Just(Ty::Bool),
        Just(Ty::S8),
        Just(Ty::U8),
        Just(Ty::S16),
        Just(Ty::U16),
        Just(Ty::S32),
        Just(Ty::U32),
        Just(Ty::S64),
        Just(Ty::U64),
        Just(Ty::F32),
        Just(Ty::F64),
        Just(Ty::Char),
        Just(Ty::String),
        (1..5usize).prop_map(Ty::Enum),
        (1..12usize).prop_map(Ty::Flags),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|ty| Ty::List(Box::new(ty))),
            vec(inner.clone(), 1..4).prop_map(Ty::Record),
            vec(inner.clone(), 1..4).prop_map(Ty::Tuple),
            vec(proptest::option::of(inner.clone()), 1..4).prop_map(Ty::Variant),
            inner.clone().prop_map(|ty| Ty::Option(Box::new(ty))),
            (
                proptest::option::of(inner.clone()),
                proptest::option::of(inner)
            )
                .prop_map(|(ok, err)| Ty::Result(ok.map(Box::new), err.map(Box::new))),
        ]
    })
}

/// Writes `ty` as WAT, defining and exporting each nominal type it uses in
/// `definitions` first (the component model requires exported functions'
/// records, variants, enums and flags to be exported types).
fn wat(ty: &Ty, definitions: &mut String, next: &mut usize) -> String {
    match ty {
        Ty::Bool => "bool".into(),
        Ty::S8 => "s8".into(),
        Ty::U8 => "u8".into(),
        Ty::S16 => "s16".into(),
        Ty::U16 => "u16".into(),
        Ty::S32 => "s32".into(),
        Ty::U32 => "u32".into(),
        Ty::S64 => "s64".into(),
        Ty::U64 => "u64".into(),
        Ty::F32 => "f32".into(),
        Ty::F64 => "f64".into(),
        Ty::Char => "char".into(),
        Ty::String => "string".into(),
        Ty::List(element) => format!("(list {})", wat(element, definitions, next)),
        Ty::Tuple(types) => {
            let types: Vec<String> = types.iter().map(|ty| wat(ty, definitions, next)).collect();
            format!("(tuple {})", types.join(" "))
        }
        Ty::Option(inner) => format!("(option {})", wat(inner, definitions, next)),
        Ty::Result(ok, err) => {
            let ok = ok.as_ref().map(|ty| wat(ty, definitions, next));
            let err = err
                .as_ref()
                .map(|ty| format!("(error {})", wat(ty, definitions, next)));
            format!(
                "(result {} {})",
                ok.unwrap_or_default(),
                err.unwrap_or_default()
            )
        }
        Ty::Record(fields) => {
            let mut body = String::from("(record");
            for (index, field) in fields.iter().enumerate() {
                let field = wat(field, definitions, next);
                body.push_str(&format!(" (field \"f{index}\" {field})"));
            }
            body.push(')');
            define(body, definitions, next)
        }
        Ty::Variant(cases) => {
            let mut body = String::from("(variant");
            for (index, case) in cases.iter().enumerate() {
                match case {
                    Some(payload) => {
                        let payload = wat(payload, definitions, next);
                        body.push_str(&format!(" (case \"c{index}\" {payload})"));
                    }
                    None => body.push_str(&format!(" (case \"c{index}\")")),
                }
            }
            body.push(')');
            define(body, definitions, next)
        }
        Ty::Enum(count) => {
            let names: Vec<String> = (0..*count).map(|index| format!("\"e{index}\"")).collect();
            define(format!("(enum {})", names.join(" ")), definitions, next)
        }
        Ty::Flags(count) => {
            let names: Vec<String> = (0..*count).map(|index| format!("\"g{index}\"")).collect();
            define(format!("(flags {})", names.join(" ")), definitions, next)
        }
    }
}

/// Defines a nominal type as `t<n>` and exports it under that name.
fn define(body: String, definitions: &mut String, next: &mut usize) -> String {
    let name = format!("t{next}");
    *next += 1;
    definitions.push_str(&format!(
        "(type ${name}' {body}) (export ${name} \"{name}\" (type ${name}'))\n"
    ));
    format!("${name}")
}

/// The identity operator over `list<ty>`, as WAT.
fn identity_component(ty: &Ty) -> String {
    let mut definitions = String::new();
    let element = wat(ty, &mut definitions, &mut 0);
    fixtures::identity(&definitions, &element)
}

/// A float as the codec writes it: non-finite values as strings.
fn float_json(float: f64) -> Value {
    if float.is_nan() {
        json!("NaN")
    } else if float.is_infinite() {
        json!(if float > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(float)
    }
}

fn object(key: String, value: Value) -> Value {
    let mut fields = Map::new();
    fields.insert(key, value);
    Value::Object(fields)
}

/// Values of `ty`, in the JSON shape the codec reads and writes.
fn any_value(ty: &Ty) -> BoxedStrategy<Value> {
    match ty {
        Ty::Bool => any::<bool>().prop_map(Value::from).boxed(),
        Ty::S8 => any::<i8>().prop_map(Value::from).boxed(),
        Ty::U8 => any::<u8>().prop_map(Value::from).boxed(),
        Ty::S16 => any::<i16>().prop_map(Value::from).boxed(),
        Ty::U16 => any::<u16>().prop_map(Value::from).boxed(),
        Ty::S32 => any::<i32>().prop_map(Value::from).boxed(),
        Ty::U32 => any::<u32>().prop_map(Value::from).boxed(),
        Ty::S64 => any::<i64>().prop_map(Value::from).boxed(),
        Ty::U64 => any::<u64>().prop_map(Value::from).boxed(),
        Ty::F32 => prop_oneof![
            any::<f32>(),
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(-0.0),
            Just(f32::MAX),
            Just(f32::MIN_POSITIVE),
        ]
        .prop_map(|float| float_json(f64::from(float)))
        .boxed(),
        Ty::F64 => prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
        ]
        .prop_map(float_json)
        .boxed(),
        Ty::Char => any::<char>()
            .prop_map(|c| Value::from(c.to_string()))
            .boxed(),
        Ty::String => vec(any::<char>(), 0..12)
            .prop_map(|chars| Value::from(chars.into_iter().collect::<String>()))
            .boxed(),
        Ty::List(element) => vec(any_value(element), 0..4).prop_map(Value::Array).boxed(),
        Ty::Tuple(types) => types
            .iter()
            .map(any_value)
            .collect::<Vec<_>>()
            .prop_map(Value::Array)
            .boxed(),
        Ty::Record(fields) => fields
            .iter()
            .map(any_value)
            .collect::<Vec<_>>()
            .prop_map(|values| {
                Value::Object(
                    values
                        .into_iter()
                        .enumerate()
                        .map(|(index, value)| (format!("f{index}"), value))
                        .collect(),
                )
            })
            .boxed(),
        Ty::Variant(cases) => Union::new(cases.iter().enumerate().map(|(index, case)| {
            let name = format!("c{index}");
            match case {
                Some(payload) => any_value(payload)
                    .prop_map(move |value| object(name.clone(), value))
                    .boxed(),
                None => Just(Value::from(name)).boxed(),
            }
        }))
        .boxed(),
        Ty::Enum(count) => (0..*count)
            .prop_map(|index| Value::from(format!("e{index}")))
            .boxed(),
        Ty::Option(inner) => {
            let some = any_value(inner);
            let some = if matches!(**inner, Ty::Option(_)) {
                some.prop_map(|value| object("some".into(), value)).boxed()
            } else {
                some
            };
            prop_oneof![Just(Value::Null), some].boxed()
        }
        Ty::Result(ok, err) => {
            let side = |name: &'static str, ty: &Option<Box<Ty>>| match ty {
                Some(ty) => any_value(ty)
                    .prop_map(move |value| object(name.into(), value))
                    .boxed(),
                None => Just(object(name.into(), Value::Null)).boxed(),
            };
            prop_oneof![side("ok", ok), side("err", err)].boxed()
        }
        Ty::Flags(count) => vec(any::<bool>(), *count)
            .prop_map(|set| {
                let names = set.into_iter().enumerate().filter(|(_, on)| *on);
                Value::Array(
                    names
                        .map(|(index, _)| Value::from(format!("g{index}")))
                        .collect(),
                )
            })
            .boxed(),
    }
}

/// A type, and the argument of its identity operator: a list of values.
fn any_typed_list() -> impl Strategy<Value = (Ty, Vec<Value>)> {
    any_ty().prop_flat_map(|ty| {
        let values = vec(any_value(&ty), 0..6);
        (Just(ty), values)
    })
}

/// A place in an input: its path as the host reports it, its JSON pointer,
/// and the type expected there.
struct Place {
    path: String,
    pointer: String,
    ty: Ty,
}

/// Every place in `value` (of type `ty`) where a wrong value can go.
fn places(ty: &Ty, value: &Value, path: &str, pointer: &str, out: &mut Vec<Place>) {
    out.push(Place {
        path: path.to_owned(),
        pointer: pointer.to_owned(),
        ty: ty.clone(),
    });
    inner_places(ty, value, path, pointer, out);
}

fn inner_places(ty: &Ty, value: &Value, path: &str, pointer: &str, out: &mut Vec<Place>) {
    let child = |ty: &Ty, value: &Value, key: &str, out: &mut Vec<Place>| {
        let segment = if key.starts_with(|c: char| c.is_ascii_digit()) {
            format!("[{key}]")
        } else {
            format!(".{key}")
        };
        places(
            ty,
            value,
            &format!("{path}{segment}"),
            &format!("{pointer}/{key}"),
            out,
        );
    };
    match (ty, value) {
        (Ty::List(element), Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                child(element, item, &index.to_string(), out);
            }
        }
        (Ty::Tuple(types), Value::Array(items)) => {
            for (index, (ty, item)) in types.iter().zip(items).enumerate() {
                child(ty, item, &index.to_string(), out);
            }
        }
        (Ty::Record(fields), Value::Object(object)) => {
            for (index, ty) in fields.iter().enumerate() {
                let name = format!("f{index}");
                child(ty, &object[&name], &name, out);
            }
        }
        (Ty::Variant(cases), Value::Object(object)) => {
            for (name, payload) in object {
                let index: usize = name[1..].parse().expect("cases are named c<index>");
                if let Some(ty) = &cases[index] {
                    child(ty, payload, name, out);
                }
            }
        }
        (Ty::Result(ok, err), Value::Object(object)) => {
            for (name, side) in [("ok", ok), ("err", err)] {
                if let (Some(ty), Some(payload)) = (side, object.get(name)) {
                    child(ty, payload, name, out);
                }
            }
        }
        (Ty::Option(_), Value::Null) => {}
        (Ty::Option(inner), Value::Object(object)) if matches!(**inner, Ty::Option(_)) => {
            child(inner, &object["some"], "some", out);
        }
        // `some(v)` is `v` itself: the same place, where `null` is valid,
        // so only the places inside `v` are added.
        (Ty::Option(inner), value) => inner_places(inner, value, path, pointer, out),
        _ => {}
    }
}

/// Values that are wrong for `ty`, whatever the value was.
fn wrong_values(ty: &Ty) -> Vec<Value> {
    let out_of_range = |below: Value, above: Value| {
        vec![
            json!(true),
            json!("1"),
            json!(0.5),
            json!(null),
            below,
            above,
        ]
    };
    match ty {
        Ty::Bool => vec![json!("yes"), json!(0), json!(null), json!([])],
        Ty::S8 => out_of_range(json!(-129), json!(128)),
        Ty::U8 => out_of_range(json!(-1), json!(256)),
        Ty::S16 => out_of_range(json!(-32769), json!(32768)),
        Ty::U16 => out_of_range(json!(-1), json!(65536)),
        Ty::S32 => out_of_range(json!(-2_147_483_649i64), json!(2_147_483_648i64)),
        Ty::U32 => out_of_range(json!(-1), json!(4_294_967_296i64)),
        Ty::S64 => out_of_range(json!(-1e19), json!(u64::MAX)),
        Ty::U64 => out_of_range(json!(-1), json!(1e20)),
        Ty::F32 => vec![
            json!(true),
            json!("nan"),
            json!(null),
            json!(1e39),
            json!([]),
        ],
        Ty::F64 => vec![json!(true), json!("inf"), json!(null), json!({})],
        Ty::Char => vec![json!(""), json!("ab"), json!(7), json!(null)],
        Ty::String => vec![json!(7), json!(null), json!(["s"]), json!({})],
        Ty::List(_) => vec![json!({}), json!("[]"), json!(null), json!(7)],
        Ty::Tuple(types) => vec![
            Value::Array(vec![json!(0); types.len() + 1]),
            json!([]),
            json!(null),
            json!("x"),
        ],
        Ty::Record(_) => vec![
            json!([]),
            json!(7),
            json!(null),
            json!({"no-such-field": 1}),
        ],
        Ty::Variant(_) => vec![
            json!("no-such-case"),
            json!(7),
            json!(null),
            json!({"c0": null, "c1": null}),
            json!({"no-such-case": null}),
        ],
        Ty::Enum(_) => vec![json!("no-such-case"), json!(7), json!(null), json!(["e0"])],
        Ty::Option(inner) => {
            let mut wrong = wrong_values(inner);
            wrong.retain(|value| !value.is_null());
            if matches!(**inner, Ty::Option(_)) {
                wrong.push(json!({"none": null}));
            }
            wrong
        }
        Ty::Result(..) => vec![
            json!({}),
            json!({"ok": null, "err": null}),
            json!({"maybe": null}),
            json!(7),
            json!(null),
        ],
        Ty::Flags(_) => vec![
            json!("g0"),
            json!(["no-such-flag"]),
            json!(null),
            json!([7]),
        ],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime builds")
}

/// Each case is shown as the component's WAT and the input, so a failure
/// can be replayed by hand.
fn describe_case(ty: &Ty, input: &Value) -> String {
    let mut definitions = String::new();
    let element = wat(ty, &mut definitions, &mut 0);
    format!("element type: {element}\n{definitions}input: {input}")
}

/// Runs `test` on values from `strategy`, panicking with the smallest
/// failing case, readably.
fn check<S: Strategy>(
    cases: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(error) = runner.run(strategy, test) {
        panic!("{error}");
    }
}

fn fail(error: impl std::fmt::Debug, case: &str) -> TestCaseError {
    TestCaseError::fail(format!("{error:?}\n{case}"))
}

#[test]
fn values_of_random_types_round_trip_through_a_guest() {
    let runtime = runtime();
    let host = uncached_host();
    let limits = Limits::default();
    check(CASES, &any_typed_list(), |(ty, values)| {
        let input = json!({ "x": values });
        let case = describe_case(&ty, &input);
        runtime.block_on(async {
            let operator = load_wat(&host, &identity_component(&ty))
                .await
                .map_err(|error| fail(error, &case))?;
            let output = operator
                .call(&input, &limits)
                .await
                .map_err(|error| fail(error, &case))?;
            prop_assert_eq!(output, Value::Array(values), "{}", case);
            Ok(())
        })
    });
}

#[test]
fn a_wrong_value_anywhere_is_refused_with_its_path() {
    let runtime = runtime();
    let host = uncached_host();
    let limits = Limits::default();
    let strategy = (any_typed_list(), any::<Index>(), any::<Index>());
    check(CASES, &strategy, |((ty, values), place, wrong)| {
        let mut input = json!({ "x": values });
        let mut all = Vec::new();
        let list = Ty::List(Box::new(ty.clone()));
        places(&list, &input["x"], "$.x", "/x", &mut all);
        let place = place.get(&all);
        let wrong = wrong.get(&wrong_values(&place.ty)).clone();
        *input.pointer_mut(&place.pointer).unwrap() = wrong;
        let case = describe_case(&ty, &input);
        runtime.block_on(async {
            let operator = load_wat(&host, &identity_component(&ty))
                .await
                .map_err(|error| fail(error, &case))?;
            match operator.call(&input, &limits).await {
                Err(Error::Validation { path, .. }) => {
                    // The error is at the wrong value, or inside it.
                    let rest = path.strip_prefix(&place.path);
                    prop_assert!(
                        rest.is_some_and(|rest| rest.is_empty()
                            || rest.starts_with('.')
                            || rest.starts_with('[')),
                        "refused at {}, the wrong value is at {}\n{}",
                        path,
                        place.path,
                        case
                    );
                    Ok(())
                }
                other => Err(fail(
                    format!(
                        "expected a validation error at {}, got {other:?}",
                        place.path
                    ),
                    &case,
                )),
            }
        })
    });
}

/// Any JSON at all, as the `every_family` fixture's record, as its
/// arguments, or as the whole input: accepted or refused as `validation`,
/// never anything else.
#[test]
fn arbitrary_json_is_accepted_or_refused_never_anything_else() {
    let runtime = runtime();
    let host = host();
    let operator = runtime
        .block_on(load_wat(&host, &fixtures::every_family()))
        .unwrap();
    let text = |chars: Vec<char>| Value::from(chars.into_iter().collect::<String>());
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(float_json),
        vec(any::<char>(), 0..4).prop_map(text),
        // Names the fixture's types use, so some values get further in.
        prop_oneof![
            Just("NaN"),
            Just("red"),
            Just("read"),
            Just("point"),
            Just("a")
        ]
        .prop_map(Value::from),
    ];
    let json = leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            Just("flag".to_owned()),
            Just("items".to_owned()),
            Just("shape".to_owned()),
            Just("circle".to_owned()),
            Just("ok".to_owned()),
            vec(proptest::char::range('a', 'z'), 1..6)
                .prop_map(|chars| chars.into_iter().collect()),
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key, inner), 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    });
    check(256, &json, |all| {
        for input in [json!({ "all": all }), json!([all]), all.clone()] {
            let result = runtime.block_on(operator.call(&input, &Limits::default()));
            prop_assert!(
                result
                    .as_ref()
                    .map_or_else(|error| error.kind() == ErrorKind::Validation, |_| true),
                "{} gave {:?}",
                input,
                result
            );
        }
        Ok(())
    });
}
