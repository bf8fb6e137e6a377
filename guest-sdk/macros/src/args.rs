//! The arguments of `#[operator(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::{LitBool, LitStr};

/// What `#[operator(...)]` was given; every field is optional.
pub(crate) struct Args {
    /// `name = "..."`: defaults to the crate's package name.
    pub(crate) name: Option<LitStr>,
    /// `version = "..."`: defaults to the crate's package version.
    pub(crate) version: Option<LitStr>,
    /// `description = "..."`: defaults to the function's doc comment.
    pub(crate) description: Option<LitStr>,
    /// `deterministic` or `deterministic = true|false`: defaults to false.
    pub(crate) deterministic: bool,
    /// `types = "..."`: WIT type definitions used by the signature.
    pub(crate) types: Option<LitStr>,
    /// `panic_hook = false`: in a lean build (no WASI), leave out the hook
    /// that sends panic messages to the host's log; defaults to true.
    pub(crate) panic_hook: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            name: None,
            version: None,
            description: None,
            deterministic: false,
            types: None,
            panic_hook: true,
        }
    }
}

impl Args {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut args = Self::default();
        let parser = syn::meta::parser(|meta| args.parse_one(&meta));
        syn::parse::Parser::parse2(parser, tokens)?;
        Ok(args)
    }

    fn parse_one(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        let slot = match key.as_str() {
            "deterministic" => {
                self.deterministic = if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<LitBool>()?.value
                } else {
                    true
                };
                return Ok(());
            }
            "panic_hook" => {
                self.panic_hook = meta.value()?.parse::<LitBool>()?.value;
                return Ok(());
            }
            "name" => &mut self.name,
            "version" => &mut self.version,
            "description" => &mut self.description,
            "types" => &mut self.types,
            _ => {
                return Err(meta.error(
                    "unknown operator argument; expected one of `name = \"..\"`, \
                     `version = \"..\"`, `description = \"..\"`, `deterministic`, \
                     `types = \"<WIT type definitions>\"`, `panic_hook = false`",
                ));
            }
        };
        if slot.is_some() {
            return Err(meta.error(format!("`{key}` is given twice")));
        }
        *slot = Some(meta.value()?.parse()?);
        Ok(())
    }
}

/// The operator's name: the `name` argument, else the crate's package name,
/// else the function's name; always kebab-case.
pub(crate) fn operator_name(explicit: Option<&LitStr>, fn_name: &str) -> syn::Result<String> {
    if let Some(lit) = explicit {
        let name = lit.value();
        if !crate::signature::is_wit_identifier(&name) {
            return Err(syn::Error::new(
                lit.span(),
                "the operator name must be kebab-case: lowercase words of letters and \
                 digits, each starting with a letter, joined by `-` (e.g. `word-count`)",
            ));
        }
        return Ok(name);
    }
    // Cargo sets the package name in the environment of the rustc process
    // that expands this macro, i.e. the operator crate's own name.
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| fn_name.to_owned());
    let name = package.replace('_', "-").to_lowercase();
    if crate::signature::is_wit_identifier(&name) {
        Ok(name)
    } else {
        Err(syn::Error::new(
            Span::call_site(),
            format!(
                "the package name `{package}` is not a valid operator name; \
                 give one with `#[operator(name = \"my-operator\")]`"
            ),
        ))
    }
}

/// The first paragraph of the doc comment in `attrs`, on one line.
pub(crate) fn doc_summary(attrs: &[syn::Attribute]) -> Option<String> {
    let lines = attrs.iter().filter_map(|attr| match &attr.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(text),
                ..
            }) => Some(text.value()),
            _ => None,
        },
        _ => None,
    });
    let mut summary = Vec::new();
    for line in lines.flat_map(|doc| doc.lines().map(str::to_owned).collect::<Vec<_>>()) {
        let line = line.trim();
        if line.is_empty() {
            if summary.is_empty() {
                continue;
            }
            break;
        }
        summary.push(line.to_owned());
    }
    (!summary.is_empty()).then(|| summary.join(" "))
}
