//! Integration tests of xcs against real operator components (built from
//! `operators/` by the build script) and inline WAT fixtures.

mod fixtures;
mod util;

mod chaos;
mod compose;
mod concurrency;
mod disk_cache;
mod grants;
mod graph;
mod hardening;
mod hostile;
mod http;
mod layers;
mod limits;
mod load;
mod operators;
mod policies;
mod properties;
mod validation;
