//! FLUX.2 [klein] model code on candle. Knows no engine and no UI.
