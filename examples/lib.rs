//! Examples of embedding xcs; see `embed.rs`. This library is empty: the
//! package exists to build and test the examples.
