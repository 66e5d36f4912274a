//! Images, layers and their file formats. Knows no engine, no model and no UI.
