//! The `veetance` command line.
fn main() {}
