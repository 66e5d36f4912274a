//! Veetance engine.
