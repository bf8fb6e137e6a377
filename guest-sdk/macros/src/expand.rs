//! The expansion of `#[operator]`: a WIT world and the glue that exports it.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};
use syn::LitStr;

use crate::args::{self, Args};
use crate::signature::{self, Type, kebab};

/// The contract, embedded when this macro is compiled: `wit/` stays the one
/// source of truth, and editing it rebuilds every operator.
const OPERATOR_WIT: &str = include_str!("../../../wit/operator.wit");

/// The name of the generated world. Only the core module's custom section
/// sees it; the component's exports are what the host reads.
const WORLD: &str = "operator-implementation";

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = Args::parse(args)?;
    let function: syn::ItemFn = syn::parse2(item)?;
    let operator = signature::read(&function.sig)?;
    let fn_name = &function.sig.ident;

    let name = args::operator_name(args.name.as_ref(), &kebab(&fn_name.to_string()))?;
    let version = match &args.version {
        Some(version) => quote!(#version),
        None => quote!(::core::env!("CARGO_PKG_VERSION")),
    };
    let description = match (&args.description, args::doc_summary(&function.attrs)) {
        (Some(description), _) => quote!(#description),
        (None, Some(doc)) => quote!(#doc),
        (None, None) => quote!(::core::env!("CARGO_PKG_DESCRIPTION")),
    };
    let deterministic = args.deterministic;

    let types_span = args
        .types
        .as_ref()
        .map_or_else(Span::call_site, LitStr::span);
    let snippet = args.types.as_ref().map(LitStr::value).unwrap_or_default();
    let declared =
        declared_types(&snippet).map_err(|message| syn::Error::new(types_span, message))?;
    check_named_types(&operator, &declared)?;
    let world = LitStr::new(&world_wit(&name, &snippet, &operator), types_span);

    let param_names: Vec<&Ident> = operator.params.iter().map(|(name, _)| name).collect();
    let param_types = operator.params.iter().map(|(_, ty)| ty.rust());
    let ok_type = operator.ok.as_ref().map_or_else(|| quote!(()), Type::rust);
    let type_names: Vec<Ident> = declared
        .iter()
        .map(|wit| format_ident!("{}", signature::camel_from_kebab(wit)))
        .collect();
    let type_imports = (!type_names.is_empty()).then(|| {
        quote! {
            #[allow(
                unused_imports,
                reason = "a type may be used only inside another declared type"
            )]
            use __xcs_operator::{#(#type_names),*};
        }
    });

    let into_error = quote! {
        |error| {
            let (code, message, retryable) = ::xcs_guest::__private::into_parts(error);
            Error { code, message, retryable }
        }
    };
    let body = if operator.finishes {
        // A composite that returns `Ok(deferred)` hands it to `finish`,
        // which ends its code there.
        quote! {
            match super::#fn_name(#(#param_names),*) {
                ::core::result::Result::Ok(output) => ::xcs_guest::compose::finish(&output),
                ::core::result::Result::Err(error) => ::core::result::Result::Err((#into_error)(error)),
            }
        }
    } else {
        quote! {
            super::#fn_name(#(#param_names),*).map_err(#into_error)
        }
    };
    // The panic hook of lean builds, unless the operator leaves it out.
    let enter = args
        .panic_hook
        .then(|| quote!(::xcs_guest::__private::enter();));
    Ok(quote! {
        #function

        #type_imports

        #[doc(hidden)]
        #[allow(
            unsafe_code,
            reason = "the canonical-ABI glue that wit-bindgen generates is unsafe by nature"
        )]
        #[allow(
            clippy::too_many_arguments,
            reason = "the export glue takes `invoke`'s parameters flattened: options and \
                      strings are several core values each"
        )]
        mod __xcs_operator {
            ::xcs_guest::wit_bindgen::generate!({
                inline: #world,
                world: #WORLD,
                runtime_path: "::xcs_guest::wit_bindgen::rt",
                generate_unused_types: true,
            });

            struct Operator;

            impl Guest for Operator {
                fn metadata() -> Metadata {
                    #enter
                    Metadata {
                        name: ::std::string::String::from(#name),
                        version: ::std::string::String::from(#version),
                        description: ::std::string::String::from(#description),
                        deterministic: #deterministic,
                    }
                }

                fn invoke(
                    #(#param_names: #param_types),*
                ) -> ::core::result::Result<#ok_type, Error> {
                    #enter
                    #body
                }
            }

            export!(Operator);
        }
    })
}

/// The contract plus a world that adds this operator's `invoke` export.
fn world_wit(name: &str, snippet: &str, operator: &signature::Operator) -> String {
    let params: Vec<String> = operator
        .params
        .iter()
        .map(|(param, ty)| format!("%{}: {}", kebab(&param.to_string()), ty.wit()))
        .collect();
    let ok = operator
        .ok
        .as_ref()
        .map_or_else(|| "_".to_owned(), Type::wit);
    format!(
        "{OPERATOR_WIT}\n\
         /// The operator `{name}`.\n\
         world {WORLD} {{\n\
         \x20   include operator;\n\
         \x20   use types.{{error}};\n\n\
         {snippet}\n\n\
         \x20   export invoke: func({params}) -> result<{ok}, error>;\n\
         }}\n",
        params = params.join(", "),
    )
}

/// The kebab-case names of the types a `types = "..."` snippet declares.
fn declared_types(snippet: &str) -> Result<Vec<String>, String> {
    let code: String = snippet
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut words = code
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '%'))
        .filter(|word| !word.is_empty());
    let mut names = Vec::new();
    while let Some(word) = words.next() {
        match word {
            "record" | "variant" | "enum" | "flags" | "type" => {
                if let Some(name) = words.next() {
                    names.push(name.trim_start_matches('%').to_owned());
                }
            }
            "resource" => {
                return Err(
                    "operators cannot use resources: `invoke` takes and returns \
                            plain values"
                        .to_owned(),
                );
            }
            _ => {}
        }
    }
    Ok(names)
}

/// Every named type in the signature must come from the `types` snippet.
fn check_named_types(operator: &signature::Operator, declared: &[String]) -> syn::Result<()> {
    fn visit(ty: &Type, declared: &[String]) -> syn::Result<()> {
        match ty {
            Type::Named { rust, wit } if !declared.contains(wit) => Err(syn::Error::new(
                rust.span(),
                format!(
                    "`{rust}` is not a WIT type: declare it in the attribute, e.g. \
                     `#[operator(types = \"record {wit} {{ ... }}\")]`"
                ),
            )),
            Type::List(item) | Type::Option(item) => visit(item, declared),
            Type::Result(ok, err) => ok.iter().chain(err).try_for_each(|ty| visit(ty, declared)),
            Type::Tuple(items) => items.iter().try_for_each(|ty| visit(ty, declared)),
            _ => Ok(()),
        }
    }
    operator
        .params
        .iter()
        .map(|(_, ty)| ty)
        .chain(&operator.ok)
        .try_for_each(|ty| visit(ty, declared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_types_a_snippet_declares() {
        let snippet = "record stats { count: u32, %type: u8 }\n\
                       // enum commented-out { a }\n\
                       variant shape { circle(f64) } flags perms { read } enum %flags { a }";
        assert_eq!(
            declared_types(snippet),
            Ok(vec![
                "stats".to_owned(),
                "shape".to_owned(),
                "perms".to_owned(),
                "flags".to_owned()
            ])
        );
        assert!(declared_types("resource file;").is_err());
    }

    #[test]
    fn the_world_extends_the_contract() {
        let sig: syn::Signature = syn::parse_quote!(fn op(xs: Vec<i64>) -> Result<i64, Error>);
        let operator = signature::read(&sig).map_err(|error| error.to_string());
        let world = operator.map(|operator| world_wit("sum", "", &operator));
        let world = world.as_deref().unwrap_or_default();
        assert!(world.starts_with(OPERATOR_WIT), "{world}");
        assert!(
            world.contains("include operator;")
                && world.contains("export invoke: func(%xs: list<s64>) -> result<s64, error>;"),
            "{world}"
        );
    }
}
