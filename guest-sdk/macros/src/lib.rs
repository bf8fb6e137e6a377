//! The `#[operator]` attribute of the xcs guest SDK.
//!
//! Use it through `xcs_guest::operator`; the `xcs-guest` crate documents the
//! syntax, the Rust → WIT type mapping and what the expansion contains. This
//! crate only turns one annotated function into a component world and the
//! glue that exports it.

mod args;
mod expand;
mod signature;

use proc_macro::TokenStream;

/// Turns one function into the `invoke` export of an xcs operator component.
///
/// See the `xcs-guest` crate documentation for the syntax.
#[proc_macro_attribute]
pub fn operator(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::expand(args.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            // Keep the user's function so that one mistake in the signature
            // does not also produce "cannot find function" errors elsewhere.
            let error = error.to_compile_error();
            quote::quote!(#error #item).into()
        }
    }
}
