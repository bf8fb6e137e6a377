//! Reading an operator function's signature as WIT.
//!
//! Every supported Rust type becomes a [`Type`], which knows both its WIT
//! spelling (for the generated world) and the Rust type `wit-bindgen`
//! generates for it (for the `Guest` implementation). Anything else is an
//! error that names the offending type and says what would work instead.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Pat, PathArguments, ReturnType, Signature};

/// The parts of the user's function that the expansion needs.
pub(crate) struct Operator {
    /// Parameters in order: the Rust name and the type.
    pub(crate) params: Vec<(Ident, Type)>,
    /// The `T` of `Result<T, Error>`; `None` for `()`. For a composite
    /// returning `Result<Deferred<T>, Error>`, that `T`.
    pub(crate) ok: Option<Type>,
    /// Whether it returns a `Deferred<T>`: the composite's result is what
    /// that call produces (the glue hands it to `compose::finish`).
    pub(crate) finishes: bool,
}

/// A WIT value type that an operator may take or return.
pub(crate) enum Type {
    /// `bool`, the integers, floats and `char`: same name in Rust and WIT
    /// except for the signed integers.
    Primitive {
        rust: Ident,
        wit: &'static str,
    },
    String,
    List(Box<Type>),
    Option(Box<Type>),
    Result(Option<Box<Type>>, Option<Box<Type>>),
    Tuple(Vec<Type>),
    /// A type from the `types = "..."` snippet, by its generated name.
    Named {
        rust: Ident,
        wit: String,
    },
}

impl Type {
    /// The WIT spelling, e.g. `list<option<s64>>`.
    pub(crate) fn wit(&self) -> String {
        fn payload(ty: Option<&Type>) -> String {
            ty.map_or_else(|| "_".to_owned(), Type::wit)
        }
        match self {
            Self::Primitive { wit, .. } => (*wit).to_owned(),
            Self::String => "string".to_owned(),
            Self::List(item) => format!("list<{}>", item.wit()),
            Self::Option(item) => format!("option<{}>", item.wit()),
            Self::Result(None, None) => "result".to_owned(),
            Self::Result(ok, err) => {
                format!(
                    "result<{}, {}>",
                    payload(ok.as_deref()),
                    payload(err.as_deref())
                )
            }
            Self::Tuple(items) => {
                let items: Vec<_> = items.iter().map(Self::wit).collect();
                format!("tuple<{}>", items.join(", "))
            }
            Self::Named { wit, .. } => format!("%{wit}"),
        }
    }

    /// The Rust type `wit-bindgen` generates for this WIT type in an export,
    /// as seen from the module that holds the generated bindings.
    pub(crate) fn rust(&self) -> TokenStream {
        fn payload(ty: Option<&Type>) -> TokenStream {
            ty.map_or_else(|| quote!(()), Type::rust)
        }
        match self {
            Self::Primitive { rust, .. } | Self::Named { rust, .. } => quote!(#rust),
            Self::String => quote!(::std::string::String),
            Self::List(item) => {
                let item = item.rust();
                quote!(::std::vec::Vec<#item>)
            }
            Self::Option(item) => {
                let item = item.rust();
                quote!(::core::option::Option<#item>)
            }
            Self::Result(ok, err) => {
                let ok = payload(ok.as_deref());
                let err = payload(err.as_deref());
                quote!(::core::result::Result<#ok, #err>)
            }
            Self::Tuple(items) => {
                let items = items.iter().map(Self::rust);
                quote!((#(#items,)*))
            }
        }
    }
}

/// Reads `sig`, or says precisely why it cannot be an operator.
pub(crate) fn read(sig: &Signature) -> syn::Result<Operator> {
    let unsupported = |what: &str, span: proc_macro2::Span| {
        Err(syn::Error::new(
            span,
            format!("an operator function cannot be {what}"),
        ))
    };
    if let Some(token) = &sig.asyncness {
        return unsupported("`async`", token.span());
    }
    if let Some(token) = &sig.unsafety {
        return unsupported("`unsafe`", token.span());
    }
    if let Some(abi) = &sig.abi {
        return unsupported("`extern`", abi.span());
    }
    if let Some(token) = &sig.variadic {
        return unsupported("variadic", token.span());
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return unsupported("generic (WIT signatures are concrete)", sig.generics.span());
    }
    // Report every bad parameter and the return type together.
    let mut params = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let mut note = |error: syn::Error| match &mut errors {
        Some(errors) => errors.combine(error),
        None => errors = Some(error),
    };
    for arg in &sig.inputs {
        match read_param(arg) {
            Ok(param) => params.push(param),
            Err(error) => note(error),
        }
    }
    let (ok, finishes) = match read_return(&sig.output) {
        Ok(ok) => ok,
        Err(error) => {
            note(error);
            (None, false)
        }
    };
    match errors {
        Some(errors) => Err(errors),
        None => Ok(Operator {
            params,
            ok,
            finishes,
        }),
    }
}

fn read_param(arg: &FnArg) -> syn::Result<(Ident, Type)> {
    let typed = match arg {
        FnArg::Receiver(receiver) => {
            return Err(syn::Error::new_spanned(
                receiver,
                "an operator is a free function: it cannot take `self`",
            ));
        }
        FnArg::Typed(typed) => typed,
    };
    let Pat::Ident(pat) = &*typed.pat else {
        return Err(syn::Error::new_spanned(
            &typed.pat,
            "operator parameters must be plain names (`text: String`): the names \
             become the WIT parameter names",
        ));
    };
    if pat.by_ref.is_some() || pat.subpat.is_some() {
        return Err(syn::Error::new_spanned(
            pat,
            "operator parameters must be plain names (`text: String`)",
        ));
    }
    let name = pat.ident.unraw();
    if !is_wit_identifier(&kebab(&name.to_string())) {
        return Err(syn::Error::new_spanned(
            &pat.ident,
            "an operator parameter name must be snake_case words that each start \
             with a letter (it becomes a kebab-case WIT name, `failure_percent` → \
             `failure-percent`)",
        ));
    }
    Ok((name, read_type(&typed.ty)?))
}

/// The `Ok` payload, and whether it is a composite's `Deferred<T>`.
fn read_return(output: &ReturnType) -> syn::Result<(Option<Type>, bool)> {
    const EXPECTED: &str = "an operator must return `Result<T, xcs_guest::Error>` \
                            (use `Result<(), xcs_guest::Error>` to return nothing)";
    let ReturnType::Type(_, ty) = output else {
        return Err(syn::Error::new_spanned(output, EXPECTED));
    };
    let (ok, err) = match result_args(ty) {
        Some(args) => args?,
        None => return Err(syn::Error::new_spanned(ty, EXPECTED)),
    };
    let is_sdk_error = matches!(err, syn::Type::Path(path)
    if path.qself.is_none()
        && path.path.segments.last().is_some_and(|last| {
            last.ident == "Error" && last.arguments.is_none()
        }));
    if !is_sdk_error {
        return Err(syn::Error::new_spanned(
            err,
            "the error type of an operator must be `xcs_guest::Error`",
        ));
    }
    if let Some((ident, args)) = last_segment(ok)
        && ident == "Deferred"
    {
        return match args.as_slice() {
            [value] => Ok((read_payload(value)?, true)),
            _ => Err(syn::Error::new_spanned(
                ok,
                "a composite returns `Result<Deferred<T>, xcs_guest::Error>`",
            )),
        };
    }
    Ok((read_payload(ok)?, false))
}

/// `Some((T, E))` if `ty` is `Result<T, E>` (by its last path segment).
fn result_args(ty: &syn::Type) -> Option<syn::Result<(&syn::Type, &syn::Type)>> {
    let (ident, args) = last_segment(ty)?;
    if ident != "Result" {
        return None;
    }
    Some(match args.as_slice() {
        [ok, err] => Ok((ok, err)),
        _ => Err(syn::Error::new_spanned(
            ty,
            "write the result type in full, as `Result<T, E>` (type aliases are not \
             followed)",
        )),
    })
}

/// A result payload: `()` means none.
fn read_payload(ty: &syn::Type) -> syn::Result<Option<Type>> {
    match ty {
        syn::Type::Tuple(tuple) if tuple.elems.is_empty() => Ok(None),
        _ => read_type(ty).map(Some),
    }
}

fn read_type(ty: &syn::Type) -> syn::Result<Type> {
    let fail = |message: &str| Err(syn::Error::new_spanned(ty, message));
    match ty {
        syn::Type::Paren(inner) => return read_type(&inner.elem),
        syn::Type::Group(inner) => return read_type(&inner.elem),
        syn::Type::Tuple(tuple) if tuple.elems.is_empty() => {
            return fail(
                "`()` can only be the payload of a `Result` (WIT has no unit type); \
                 leave the parameter out instead",
            );
        }
        syn::Type::Tuple(tuple) => {
            return tuple
                .elems
                .iter()
                .map(read_type)
                .collect::<Result<_, _>>()
                .map(Type::Tuple);
        }
        syn::Type::Reference(_) => {
            return fail(
                "operator parameters and results are owned values: use `String` for \
                 `&str` and `Vec<T>` for `&[T]`",
            );
        }
        syn::Type::Slice(_) | syn::Type::Array(_) => {
            return fail("use `Vec<T>` (WIT `list<T>`) instead of arrays and slices");
        }
        syn::Type::Path(_) => {}
        _ => return fail("this type has no WIT equivalent"),
    }
    let Some((ident, args)) = last_segment(ty) else {
        return fail("qualified paths (`<T as Trait>::X`) have no WIT equivalent");
    };
    let name = ident.to_string();
    let one_arg = |what: &str| match args.as_slice() {
        [inner] => read_type(inner),
        _ => Err(syn::Error::new_spanned(
            ty,
            format!("`{what}` takes exactly one type argument"),
        )),
    };
    let wit = match name.as_str() {
        "bool" => "bool",
        "u8" => "u8",
        "u16" => "u16",
        "u32" => "u32",
        "u64" => "u64",
        "i8" => "s8",
        "i16" => "s16",
        "i32" => "s32",
        "i64" => "s64",
        "f32" => "f32",
        "f64" => "f64",
        "char" => "char",
        "usize" | "isize" | "u128" | "i128" => {
            return fail("use a fixed-width integer between 8 and 64 bits (`u32`, `i64`, ...)");
        }
        "String" => return no_args(ty, args).map(|()| Type::String),
        "Vec" => return one_arg("Vec").map(|item| Type::List(Box::new(item))),
        "Option" => return one_arg("Option").map(|item| Type::Option(Box::new(item))),
        "Result" => {
            let Some(ok_err) = result_args(ty) else {
                return fail("expected `Result<T, E>`");
            };
            let (ok, err) = ok_err?;
            return Ok(Type::Result(
                read_payload(ok)?.map(Box::new),
                read_payload(err)?.map(Box::new),
            ));
        }
        "Box" | "Rc" | "Arc" | "HashMap" | "BTreeMap" | "HashSet" | "BTreeSet" | "VecDeque" => {
            return fail(
                "this type has no WIT equivalent: use `Vec<T>`, `Option<T>`, tuples or a record from `types = \"...\"`",
            );
        }
        _ => return named(ty, ident, args),
    };
    no_args(ty, args)?;
    Ok(Type::Primitive {
        rust: ident.clone(),
        wit,
    })
}

/// A type defined in the `types` snippet, written by its bare generated name.
fn named(ty: &syn::Type, ident: &Ident, args: Vec<&syn::Type>) -> syn::Result<Type> {
    let syn::Type::Path(path) = ty else {
        unreachable!("`last_segment` only accepts paths");
    };
    let wit = kebab_from_camel(&ident.to_string());
    if path.path.segments.len() != 1 || !args.is_empty() || !is_wit_identifier(&wit) {
        return Err(syn::Error::new_spanned(
            ty,
            "unsupported type: an operator signature may use bool, u8..u64, i8..i64, \
             f32, f64, char, String, Vec<T>, Option<T>, tuples, Result<T, E>, or a \
             record/variant/enum/flags declared in `types = \"...\"` and written by \
             its bare UpperCamelCase name",
        ));
    }
    Ok(Type::Named {
        rust: format_ident!("{}", ident, span = ident.span()),
        wit,
    })
}

fn no_args(ty: &syn::Type, args: Vec<&syn::Type>) -> syn::Result<()> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(ty, "unexpected type arguments"))
    }
}

/// The last segment of a plain path type and its type arguments.
fn last_segment(ty: &syn::Type) -> Option<(&Ident, Vec<&syn::Type>)> {
    let syn::Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    let args = match &last.arguments {
        PathArguments::None => Vec::new(),
        PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect::<Option<_>>()?,
        PathArguments::Parenthesized(_) => return None,
    };
    Some((&last.ident, args))
}

/// `failure_percent` → `failure-percent`.
pub(crate) fn kebab(snake: &str) -> String {
    snake.replace('_', "-")
}

/// `EntropySample` → `entropy-sample`.
pub(crate) fn kebab_from_camel(camel: &str) -> String {
    let mut out = String::new();
    for (index, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && index > 0 {
            out.push('-');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// `entropy-sample` → `EntropySample`, as `wit-bindgen` names the type.
pub(crate) fn camel_from_kebab(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect()
}

/// Whether `name` is a kebab-case WIT identifier (lowercase form).
pub(crate) fn is_wit_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|word| {
            word.starts_with(|ch: char| ch.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit_of(sig: TokenStream) -> Result<String, String> {
        let sig: Signature = syn::parse2(sig).map_err(|error| error.to_string())?;
        let operator = read(&sig).map_err(|errors| {
            let messages: Vec<String> = errors.into_iter().map(|error| error.to_string()).collect();
            messages.join("\n")
        })?;
        let params: Vec<String> = operator
            .params
            .iter()
            .map(|(name, ty)| format!("{}: {}", kebab(&name.to_string()), ty.wit()))
            .collect();
        let ok = operator
            .ok
            .as_ref()
            .map_or_else(|| "_".to_owned(), Type::wit);
        Ok(format!("({}) -> {ok}", params.join(", ")))
    }

    #[test]
    fn maps_every_supported_type() {
        let wit = wit_of(quote! {
            fn op(
                flag: bool, byte: u8, small: i16, big: i64, real: f64, letter: char,
                text: String, xs: Vec<Option<u32>>, pair: (String, i8),
                outcome: Result<(), String>, failure_percent: u8, r#type: Point,
            ) -> Result<Vec<EntropySample>, xcs_guest::Error>
        });
        assert_eq!(
            wit.as_deref(),
            Ok(
                "(flag: bool, byte: u8, small: s16, big: s64, real: f64, letter: char, \
                text: string, xs: list<option<u32>>, pair: tuple<string, s8>, \
                outcome: result<_, string>, failure-percent: u8, type: %point) \
                -> list<%entropy-sample>"
            )
        );
    }

    #[test]
    fn unit_result_has_no_payload() {
        assert_eq!(
            wit_of(quote!(fn noop() -> Result<(), Error>)).as_deref(),
            Ok("() -> _")
        );
    }

    #[test]
    fn rejects_unsupported_signatures_with_every_reason() {
        let error = |sig| wit_of(sig).err().unwrap_or_default();
        // All three problems are reported at once.
        let all = error(quote!(fn op(text: &str, len: usize) -> u32));
        assert!(
            all.contains("owned values")
                && all.contains("fixed-width")
                && all.contains("must return"),
            "{all}"
        );
        let generic = error(quote!(fn op<T>(value: T) -> Result<u32, Error>));
        assert!(generic.contains("generic"), "{generic}");
        let wrong_error = error(quote!(fn op(text: String) -> Result<u32, String>));
        assert!(wrong_error.contains("xcs_guest::Error"), "{wrong_error}");
    }

    #[test]
    fn converts_names_like_wit_bindgen() {
        assert_eq!(kebab_from_camel("EntropySample"), "entropy-sample");
        assert_eq!(camel_from_kebab("entropy-sample"), "EntropySample");
        assert!(is_wit_identifier("word-count2"));
        assert!(!is_wit_identifier("2-words"));
        assert!(!is_wit_identifier("a--b"));
    }
}
