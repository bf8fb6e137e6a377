//! WIT value types as the host sees them, read from a component's own type.

use std::fmt;

use wasmtime::component::types::Type;

/// A WIT value type.
///
/// Operators' signatures are made of these. Records, variants, enums and
/// flags are structural here: the component model does not keep their WIT
/// names, so a record prints as `record { a: u32, b: string }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WitType {
    /// `bool`
    Bool,
    /// `s8`
    S8,
    /// `u8`
    U8,
    /// `s16`
    S16,
    /// `u16`
    U16,
    /// `s32`
    S32,
    /// `u32`
    U32,
    /// `s64`
    S64,
    /// `u64`
    U64,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `char`
    Char,
    /// `string`
    String,
    /// `list<T>`
    List(Box<WitType>),
    /// `record { name: T, ... }`
    Record(Vec<(String, WitType)>),
    /// `tuple<T, ...>`
    Tuple(Vec<WitType>),
    /// `variant { case(T), other, ... }`
    Variant(Vec<(String, Option<WitType>)>),
    /// `enum { a, b, ... }`
    Enum(Vec<String>),
    /// `option<T>`
    Option(Box<WitType>),
    /// `result<T, E>` (either side may be absent: `result<_, E>`)
    Result {
        /// The `ok` payload type.
        ok: Option<Box<WitType>>,
        /// The `err` payload type.
        err: Option<Box<WitType>>,
    },
    /// `flags { a, b, ... }`
    Flags(Vec<String>),
}

/// WIT's keywords: an identifier spelled like one is written `%name` in
/// WIT (`%type: u32`), as printed signatures do.
pub const WIT_KEYWORDS: &[&str] = &[
    "as",
    "async",
    "bool",
    "borrow",
    "char",
    "constructor",
    "enum",
    "error-context",
    "export",
    "f32",
    "f64",
    "flags",
    "from",
    "func",
    "future",
    "import",
    "include",
    "interface",
    "list",
    "map",
    "option",
    "own",
    "package",
    "record",
    "resource",
    "result",
    "s16",
    "s32",
    "s64",
    "s8",
    "static",
    "stream",
    "string",
    "tuple",
    "type",
    "u16",
    "u32",
    "u64",
    "u8",
    "use",
    "variant",
    "with",
    "world",
];

/// `name` as a WIT identifier: `%`-escaped when it is a keyword.
pub(crate) fn ident(name: &str) -> std::borrow::Cow<'_, str> {
    if WIT_KEYWORDS.contains(&name) {
        format!("%{name}").into()
    } else {
        name.into()
    }
}

/// The longest name an operator may have, in bytes.
pub const MAX_OPERATOR_NAME_BYTES: usize = 64;

/// Whether `name` can name an operator: kebab-case words of lowercase
/// ASCII letters and digits, each starting with a letter (a WIT
/// identifier: `word-count`), at most [`MAX_OPERATOR_NAME_BYTES`].
///
/// ```
/// assert!(xcs::is_operator_name("word-count"));
/// assert!(!xcs::is_operator_name("Word_Count"));
/// ```
pub fn is_operator_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_OPERATOR_NAME_BYTES
        && name.split('-').all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// What [`Unsupported`] calls a resource handle.
pub(crate) const RESOURCE_HANDLES: &str = "resource handles";

/// A component type the host cannot pass as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(pub(crate) &'static str);

/// The most bytes of types (names, and 8 per type) the host reflects of an
/// operator's signature: far more than any signature written by hand,
/// far less than the gigabytes a hostile one can expand to.
pub(crate) const MAX_SIGNATURE_BYTES: usize = 1 << 20;

/// What a signature over [`MAX_SIGNATURE_BYTES`] is called in errors.
const TOO_LARGE: &str = "types that written out take more than 1 MiB (the host's bound)";

fn spend(budget: &mut usize, bytes: usize) -> Result<(), Unsupported> {
    match budget.checked_sub(bytes.saturating_add(8)) {
        Some(left) => {
            *budget = left;
            Ok(())
        }
        None => Err(Unsupported(TOO_LARGE)),
    }
}

fn owned_names<'a>(
    names: impl Iterator<Item = &'a str>,
    budget: &mut usize,
) -> Result<Vec<String>, Unsupported> {
    names
        .map(|name| {
            spend(budget, name.len())?;
            Ok(name.to_owned())
        })
        .collect()
}

impl WitType {
    /// Reads a wasmtime type; resources, maps, futures, streams and error
    /// contexts are not values the host can build from JSON. `budget` is
    /// the bytes of types (names, and 8 per type) still allowed: a
    /// component's types are a graph that, written out as a tree, can be
    /// thousands of times larger than the component (one long name used a
    /// million times), so reflection stops at the budget instead.
    pub(crate) fn from_wasmtime(ty: &Type, budget: &mut usize) -> Result<WitType, Unsupported> {
        spend(budget, 0)?;
        Ok(match ty {
            Type::Bool => WitType::Bool,
            Type::S8 => WitType::S8,
            Type::U8 => WitType::U8,
            Type::S16 => WitType::S16,
            Type::U16 => WitType::U16,
            Type::S32 => WitType::S32,
            Type::U32 => WitType::U32,
            Type::S64 => WitType::S64,
            Type::U64 => WitType::U64,
            Type::Float32 => WitType::F32,
            Type::Float64 => WitType::F64,
            Type::Char => WitType::Char,
            Type::String => WitType::String,
            Type::List(list) => WitType::List(Box::new(Self::from_wasmtime(&list.ty(), budget)?)),
            Type::Record(record) => {
                let mut fields = Vec::new();
                for field in record.fields() {
                    spend(budget, field.name.len())?;
                    let ty = Self::from_wasmtime(&field.ty, budget)?;
                    fields.push((field.name.to_owned(), ty));
                }
                WitType::Record(fields)
            }
            Type::Tuple(tuple) => {
                let mut types = Vec::new();
                for ty in tuple.types() {
                    types.push(Self::from_wasmtime(&ty, budget)?);
                }
                WitType::Tuple(types)
            }
            Type::Variant(variant) => {
                let mut cases = Vec::new();
                for case in variant.cases() {
                    spend(budget, case.name.len())?;
                    let payload = match &case.ty {
                        Some(ty) => Some(Self::from_wasmtime(ty, budget)?),
                        None => None,
                    };
                    cases.push((case.name.to_owned(), payload));
                }
                WitType::Variant(cases)
            }
            Type::Enum(names) => WitType::Enum(owned_names(names.names(), budget)?),
            Type::Option(option) => {
                WitType::Option(Box::new(Self::from_wasmtime(&option.ty(), budget)?))
            }
            Type::Result(result) => {
                let mut side = |ty: Option<Type>| -> Result<Option<Box<WitType>>, Unsupported> {
                    match ty {
                        Some(ty) => Ok(Some(Box::new(Self::from_wasmtime(&ty, budget)?))),
                        None => Ok(None),
                    }
                };
                let ok = side(result.ok())?;
                let err = side(result.err())?;
                WitType::Result { ok, err }
            }
            Type::Flags(flags) => WitType::Flags(owned_names(flags.names(), budget)?),
            Type::Own(_) | Type::Borrow(_) => return Err(Unsupported(RESOURCE_HANDLES)),
            Type::Map(_) => return Err(Unsupported("map types")),
            Type::Future(_) => return Err(Unsupported("futures")),
            Type::Stream(_) => return Err(Unsupported("streams")),
            Type::ErrorContext => return Err(Unsupported("error contexts")),
            Type::FixedLengthList(_) => return Err(Unsupported("fixed-length lists")),
        })
    }

    /// Whether a value of this type can be passed where `consumer` is
    /// expected: the same type, or a lossless numeric widening (`u32` →
    /// `s64` or `f64`, `f32` → `f64`, ...), also inside lists, options,
    /// tuples, records and results.
    pub fn can_feed(&self, consumer: &WitType) -> bool {
        use WitType::*;
        if self == consumer {
            return true;
        }
        match (self, consumer) {
            (U8, U16 | U32 | U64 | S16 | S32 | S64 | F32 | F64)
            | (U16, U32 | U64 | S32 | S64 | F32 | F64)
            | (U32, U64 | S64 | F64)
            | (S8, S16 | S32 | S64 | F32 | F64)
            | (S16, S32 | S64 | F32 | F64)
            | (S32, S64 | F64)
            | (F32, F64) => true,
            (List(a), List(b)) | (Option(a), Option(b)) => a.can_feed(b),
            (Tuple(a), Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.can_feed(b))
            }
            (Record(a), Record(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((name_a, a), (name_b, b))| name_a == name_b && a.can_feed(b))
            }
            (
                Result {
                    ok: ok_a,
                    err: err_a,
                },
                Result {
                    ok: ok_b,
                    err: err_b,
                },
            ) => {
                let side =
                    |a: &std::option::Option<Box<WitType>>,
                     b: &std::option::Option<Box<WitType>>| match (a, b) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.can_feed(b),
                        _ => false,
                    };
                side(ok_a, ok_b) && side(err_a, err_b)
            }
            _ => false,
        }
    }

    /// The short name of the type's family, used in validation messages
    /// (`list<s64>` is "list", a record is "record").
    pub(crate) fn family(&self) -> &'static str {
        match self {
            WitType::Bool => "bool",
            WitType::S8 => "s8",
            WitType::U8 => "u8",
            WitType::S16 => "s16",
            WitType::U16 => "u16",
            WitType::S32 => "s32",
            WitType::U32 => "u32",
            WitType::S64 => "s64",
            WitType::U64 => "u64",
            WitType::F32 => "f32",
            WitType::F64 => "f64",
            WitType::Char => "char",
            WitType::String => "string",
            WitType::List(_) => "list",
            WitType::Record(_) => "record",
            WitType::Tuple(_) => "tuple",
            WitType::Variant(_) => "variant",
            WitType::Enum(_) => "enum",
            WitType::Option(_) => "option",
            WitType::Result { .. } => "result",
            WitType::Flags(_) => "flags",
        }
    }
}

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    mut each: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            f.write_str(", ")?;
        }
        each(f, item)?;
    }
    Ok(())
}

impl fmt::Display for WitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WitType::List(element) => write!(f, "list<{element}>"),
            WitType::Record(fields) => {
                f.write_str("record { ")?;
                write_list(f, fields, |f, (name, ty)| {
                    write!(f, "{}: {ty}", ident(name))
                })?;
                f.write_str(" }")
            }
            WitType::Tuple(types) => {
                f.write_str("tuple<")?;
                write_list(f, types, |f, ty| write!(f, "{ty}"))?;
                f.write_str(">")
            }
            WitType::Variant(cases) => {
                f.write_str("variant { ")?;
                write_list(f, cases, |f, (name, payload)| match payload {
                    Some(ty) => write!(f, "{}({ty})", ident(name)),
                    None => f.write_str(&ident(name)),
                })?;
                f.write_str(" }")
            }
            WitType::Enum(names) => {
                f.write_str("enum { ")?;
                write_list(f, names, |f, name| f.write_str(&ident(name)))?;
                f.write_str(" }")
            }
            WitType::Flags(names) => {
                f.write_str("flags { ")?;
                write_list(f, names, |f, name| f.write_str(&ident(name)))?;
                f.write_str(" }")
            }
            WitType::Option(inner) => write!(f, "option<{inner}>"),
            WitType::Result { ok, err } => match (ok, err) {
                (None, None) => f.write_str("result"),
                (Some(ok), None) => write!(f, "result<{ok}>"),
                (None, Some(err)) => write!(f, "result<_, {err}>"),
                (Some(ok), Some(err)) => write!(f, "result<{ok}, {err}>"),
            },
            scalar => f.write_str(scalar.family()),
        }
    }
}

/// One named parameter of an operator's `invoke`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Param {
    /// The parameter's name, as in the WIT (kebab-case).
    pub name: String,
    /// Its type, structural: what an argument must look like.
    #[serde(skip)]
    pub ty: WitType,
    /// Its type as the operator's WIT spells it: records, variants, enums
    /// and flags by name (`stats`), defined in [`Signature::types`].
    /// Structural, like `ty`, when the component's WIT could not be read.
    #[serde(rename = "type")]
    pub wit: String,
}

/// A named type of an operator's signature, as WIT defines it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TypeDefinition {
    /// Its name (`stats`).
    pub name: String,
    /// Its definition (`record stats { words: u32, lines: u32 }`).
    pub definition: String,
}

/// The signature of an operator's `invoke` export.
///
/// Printed, it is WIT: `func(text: string) -> result<stats, error>`, with
/// the named types in [`types`](Self::types).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    /// Parameters in order.
    pub params: Vec<Param>,
    /// The `ok` type of `invoke`'s `result<T, error>`; `None` when it
    /// returns nothing.
    pub result: Option<WitType>,
    /// `result` as the operator's WIT spells it (see [`Param::wit`]).
    pub result_wit: Option<String>,
    /// The records, variants, enums, flags and aliases the signature names
    /// (the contract's `error` aside), each after the ones it uses; empty
    /// when it names none or the component's WIT could not be read.
    pub types: Vec<TypeDefinition>,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("func(")?;
        write_list(f, &self.params, |f, param| {
            write!(f, "{}: {}", ident(&param.name), param.wit)
        })?;
        match &self.result_wit {
            Some(result) => write!(f, ") -> result<{result}, error>"),
            None => f.write_str(") -> result<_, error>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_feeds_narrowing_does_not() {
        use WitType::*;
        assert!(U32.can_feed(&F64));
        assert!(List(Box::new(U32)).can_feed(&List(Box::new(F64))));
        assert!(!F64.can_feed(&U32));
        assert!(!S64.can_feed(&F64), "not every s64 is an f64");
        assert!(!U64.can_feed(&S64));
        assert!(!String.can_feed(&Char));
        let record = |ty: WitType| Record(vec![("n".into(), ty)]);
        assert!(record(U8).can_feed(&record(U16)));
        assert!(!record(U16).can_feed(&record(U8)));
    }

    #[test]
    fn prints_wit_syntax() {
        let ty = WitType::Result {
            ok: Some(Box::new(WitType::List(Box::new(WitType::Option(
                Box::new(WitType::S64),
            ))))),
            err: None,
        };
        assert_eq!(ty.to_string(), "result<list<option<s64>>>");
        let record = WitType::Record(vec![
            ("count".into(), WitType::U32),
            ("tags".into(), WitType::Flags(vec!["a".into(), "b".into()])),
        ]);
        assert_eq!(
            record.to_string(),
            "record { count: u32, tags: flags { a, b } }"
        );
        let signature = Signature {
            params: vec![Param {
                name: "xs".into(),
                ty: WitType::List(Box::new(WitType::S64)),
                wit: "list<s64>".into(),
            }],
            result: None,
            result_wit: None,
            types: Vec::new(),
        };
        assert_eq!(
            signature.to_string(),
            "func(xs: list<s64>) -> result<_, error>"
        );
    }
}
