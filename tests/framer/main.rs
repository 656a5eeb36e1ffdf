//! The sans-IO framer on its own, without any HTTP: the conformance cases
//! as data, bad input, and properties over generated streams.

mod bad_input;
mod common;
mod conformance;
mod properties;
