//! PNG writing with UTF-8 text metadata, and reading that metadata back.
//!
//! `image`'s PNG encoder cannot write text chunks, so pictures are written with the `png` crate
//! directly. Text goes into iTXt chunks because only iTXt holds UTF-8 (tEXt is Latin-1), and
//! workflows contain whatever the user typed into a prompt.
//! Veetance uses its own keys ([`KEY_WORKFLOW`], [`KEY_PARAMETERS`]); `prompt`, `workflow` and
//! `parameters` already belong to ComfyUI and A1111.

use std::io::{Cursor, Write};

use image::RgbaImage;

use crate::pixels::ImageRef;
use crate::{ImagingError, Result};

/// Key of the iTXt chunk holding the workflow as it was run (RON).
pub const KEY_WORKFLOW: &str = "veetance:workflow";
/// Key of the iTXt chunk holding the generation parameters.
pub const KEY_PARAMETERS: &str = "veetance:parameters";

/// Texts longer than this are deflate-compressed; short ones stay greppable.
const COMPRESS_TEXT_ABOVE_BYTES: usize = 4096;
/// Most decompressed text read from one PNG, all chunks together: a bound so that a hostile
/// file (hundreds of small chunks that each inflate to megabytes) cannot make us allocate without
/// limit. Far above any real workflow.
pub const MAX_TEXT_BYTES: usize = 64 * 1024 * 1024;
/// PNG keywords are 1 to 79 Latin-1 bytes (PNG spec, 11.3.4.1).
const MAX_KEY_BYTES: usize = 79;

/// Writes an 8-bit RGB or RGBA PNG with one iTXt chunk per `(key, text)` pair, in order.
///
/// Keys must be 1 to 79 printable ASCII characters without leading, trailing or double spaces
/// (the PNG rules, narrowed from Latin-1 to ASCII); text is any UTF-8. Long texts are compressed.
pub fn write_png<'a, K, V>(
    writer: impl Write,
    image: impl Into<ImageRef<'a>>,
    texts: &[(K, V)],
) -> Result<()>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let image = image.into();
    if image.width_px() == 0 || image.height_px() == 0 {
        return Err(ImagingError::EmptyImage {
            width_px: image.width_px(),
            height_px: image.height_px(),
        });
    }
    let mut encoder = png::Encoder::new(writer, image.width_px(), image.height_px());
    encoder.set_color(match image {
        ImageRef::Rgb(_) => png::ColorType::Rgb,
        ImageRef::Rgba(_) => png::ColorType::Rgba,
    });
    encoder.set_depth(png::BitDepth::Eight);
    // Validate every key before writing a byte, so a bad key leaves no half-written file.
    let mut chunks = Vec::with_capacity(texts.len());
    for (key, text) in texts {
        let key = key.as_ref();
        let text = text.as_ref();
        check_key(key)?;
        let mut chunk = png::text_metadata::ITXtChunk::new(key, text);
        chunk.compressed = text.len() > COMPRESS_TEXT_ABOVE_BYTES;
        chunks.push(chunk);
    }
    let mut png_writer = encoder.write_header()?;
    // Text goes before the image data, where readers that stop at IDAT still find it.
    for chunk in &chunks {
        png_writer.write_text_chunk(chunk)?;
    }
    png_writer.write_image_data(image.samples())?;
    png_writer.finish()?;
    Ok(())
}

/// Reads every text chunk (iTXt, tEXt and zTXt) of a PNG as `(key, text)` pairs.
///
/// iTXt chunks come first, then tEXt, then zTXt, each group in file order; within Veetance's own
/// files only iTXt occurs. Text chunks after the image data are included.
/// At most [`MAX_TEXT_BYTES`] of text are decompressed, all chunks together; more is an error.
pub fn read_png_text(png_bytes: &[u8]) -> Result<Vec<(String, String)>> {
    read_texts_where(png_bytes, |_| true, usize::MAX)
}

/// The workflow Export embedded in a PNG ([`KEY_WORKFLOW`]), if there is one. Text chunks under
/// other keys are skipped without being decompressed.
pub fn read_png_workflow(png_bytes: &[u8]) -> Result<Option<String>> {
    let texts = read_texts_where(png_bytes, |key| key == KEY_WORKFLOW, 1)?;
    Ok(texts.into_iter().next().map(|(_, text)| text))
}

/// The first `max_chunks` text chunks whose keys are `wanted`.
fn read_texts_where(
    png_bytes: &[u8],
    wanted: impl Fn(&str) -> bool,
    max_chunks: usize,
) -> Result<Vec<(String, String)>> {
    let mut decoder = png::Decoder::new(Cursor::new(png_bytes));
    decoder.set_ignore_text_chunk(false);
    let mut reader = decoder.read_info()?;
    // `finish` skips the pixels and walks on to IEND, so text after the image data is seen too.
    reader.finish()?;
    collect_texts(reader.info(), &wanted, max_chunks)
}

/// Decodes a PNG to RGBA8 and reads its text chunks, in one pass.
pub fn read_png_rgba(png_bytes: &[u8]) -> Result<(RgbaImage, Vec<(String, String)>)> {
    let image = image::load_from_memory_with_format(png_bytes, image::ImageFormat::Png)?;
    let texts = read_png_text(png_bytes)?;
    Ok((image.to_rgba8(), texts))
}

/// The wanted text chunks, decompressed within a budget of [`MAX_TEXT_BYTES`] for all of them.
/// (The png crate keeps compressed chunks as they are in the file, so only what we decompress
/// here can grow.)
fn collect_texts(
    info: &png::Info<'_>,
    wanted: &dyn Fn(&str) -> bool,
    max_chunks: usize,
) -> Result<Vec<(String, String)>> {
    let mut texts = Vec::new();
    let mut budget = TextBudget {
        left_bytes: MAX_TEXT_BYTES,
    };
    let chunks = info
        .utf8_text
        .iter()
        .map(TextChunk::Utf8)
        .chain(info.uncompressed_latin1_text.iter().map(TextChunk::Latin1))
        .chain(
            info.compressed_latin1_text
                .iter()
                .map(TextChunk::Compressed),
        );
    for chunk in chunks.filter(|c| wanted(c.keyword())) {
        let text = chunk
            .text(budget.left_bytes)
            .map_err(|err| budget.error(chunk.keyword(), &err))?;
        budget.spend(chunk.keyword(), text.len())?;
        texts.push((chunk.keyword().to_owned(), text));
        if texts.len() >= max_chunks {
            break;
        }
    }
    Ok(texts)
}

/// A text chunk of any of PNG's three kinds.
enum TextChunk<'a> {
    Utf8(&'a png::text_metadata::ITXtChunk),
    Latin1(&'a png::text_metadata::TEXtChunk),
    Compressed(&'a png::text_metadata::ZTXtChunk),
}

impl TextChunk<'_> {
    fn keyword(&self) -> &str {
        match self {
            TextChunk::Utf8(c) => &c.keyword,
            TextChunk::Latin1(c) => &c.keyword,
            TextChunk::Compressed(c) => &c.keyword,
        }
    }

    /// The text, inflated to at most `limit_bytes` where it is compressed.
    fn text(&self, limit_bytes: usize) -> std::result::Result<String, png::DecodingError> {
        match self {
            TextChunk::Utf8(c) => {
                let mut c = (*c).clone();
                c.decompress_text_with_limit(limit_bytes)?;
                c.get_text()
            }
            TextChunk::Latin1(c) => Ok(c.text.clone()),
            TextChunk::Compressed(c) => {
                let mut c = (*c).clone();
                c.decompress_text_with_limit(limit_bytes)?;
                c.get_text()
            }
        }
    }
}

/// What is left of [`MAX_TEXT_BYTES`] while reading one PNG's text.
struct TextBudget {
    left_bytes: usize,
}

impl TextBudget {
    fn spend(&mut self, key: &str, n_bytes: usize) -> Result<()> {
        self.left_bytes = self
            .left_bytes
            .checked_sub(n_bytes)
            .ok_or_else(|| too_much_text(key))?;
        Ok(())
    }

    /// A decompression error; the png crate does not say whether the limit stopped it, so the
    /// limit is named in every such message.
    fn error(&self, key: &str, err: &png::DecodingError) -> ImagingError {
        ImagingError::UnreadableText {
            key: key.to_owned(),
            reason: format!(
                "{err} (at most {} MiB of text are read from one PNG, all chunks together)",
                MAX_TEXT_BYTES >> 20
            ),
        }
    }
}

fn too_much_text(key: &str) -> ImagingError {
    ImagingError::UnreadableText {
        key: key.to_owned(),
        reason: format!(
            "the PNG's text chunks hold more than {} MiB of text together; refused",
            MAX_TEXT_BYTES >> 20
        ),
    }
}

fn check_key(key: &str) -> Result<()> {
    let invalid = |reason| ImagingError::InvalidTextKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(invalid("keys are 1 to 79 bytes"));
    }
    // Printable Latin-1 only; our keys are ASCII, so ASCII is all we accept.
    if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(invalid("keys are printable ASCII"));
    }
    if key.starts_with(' ') || key.ends_with(' ') || key.contains("  ") {
        return Err(invalid(
            "keys have no leading, trailing or consecutive spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage, Rgba};

    use super::*;

    fn picture() -> RgbImage {
        RgbImage::from_fn(5, 3, |x, y| Rgb([(x * 50) as u8, (y * 100) as u8, 77]))
    }

    #[test]
    fn text_and_pixels_round_trip() {
        let workflow = "Workflow(version: 1, name: \"naïve café ☕\", nodes: {})";
        let texts = [
            (KEY_WORKFLOW, workflow),
            (KEY_PARAMETERS, "seed: 42, steps: 4"),
        ];
        let mut bytes = Vec::new();
        write_png(&mut bytes, &picture(), &texts).unwrap();

        assert_eq!(
            read_png_text(&bytes).unwrap(),
            [
                (KEY_WORKFLOW.to_owned(), workflow.to_owned()),
                (KEY_PARAMETERS.to_owned(), "seed: 42, steps: 4".to_owned())
            ]
        );
        let (rgba, texts_again) = read_png_rgba(&bytes).unwrap();
        assert_eq!(texts_again.len(), 2);
        assert_eq!(image::DynamicImage::ImageRgba8(rgba).to_rgb8(), picture());
        // Written as iTXt, the only text chunk that holds UTF-8.
        assert!(bytes.windows(4).any(|window| window == b"iTXt"));
        assert!(!bytes.windows(4).any(|window| window == b"tEXt"));
    }

    #[test]
    fn big_text_is_compressed_and_survives() {
        // 5 MB of workflow: above png's default 2 MiB decompression limit, which we raise.
        let workflow: String = (0..200_000)
            .map(|idx| format!("node_{idx}: 1,\n"))
            .collect();
        assert!(workflow.len() > 2 * 1024 * 1024);
        let mut bytes = Vec::new();
        write_png(&mut bytes, &picture(), &[(KEY_WORKFLOW, workflow.as_str())]).unwrap();
        assert!(
            bytes.len() < workflow.len() / 4,
            "compressed: {} bytes",
            bytes.len()
        );
        assert_eq!(
            read_png_text(&bytes).unwrap(),
            [(KEY_WORKFLOW.to_owned(), workflow)]
        );
    }

    #[test]
    fn rgba_keeps_alpha() {
        let translucent = RgbaImage::from_fn(4, 4, |x, y| Rgba([9, 8, 7, (x * 60 + y) as u8]));
        let mut bytes = Vec::new();
        write_png(&mut bytes, &translucent, &[] as &[(&str, &str)]).unwrap();
        let (decoded, texts) = read_png_rgba(&bytes).unwrap();
        assert_eq!(decoded, translucent);
        assert!(texts.is_empty());
    }

    #[test]
    fn reads_latin1_text_written_by_other_tools() {
        // ComfyUI and A1111 write tEXt; those must come back too.
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        encoder
            .add_text_chunk("parameters".to_owned(), "a cat, Steps: 20".to_owned())
            .unwrap();
        encoder
            .add_ztxt_chunk("prompt".to_owned(), "{}".to_owned())
            .unwrap();
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[1, 2, 3]).unwrap();
        writer.finish().unwrap();
        assert_eq!(
            read_png_text(&bytes).unwrap(),
            [
                ("parameters".to_owned(), "a cat, Steps: 20".to_owned()),
                ("prompt".to_owned(), "{}".to_owned())
            ]
        );
    }

    /// A 1×1 PNG with `n_chunks` zTXt chunks under `key`, each inflating to `chunk_bytes` bytes.
    fn text_bomb(key: &str, n_chunks: usize, chunk_bytes: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        let text = "a".repeat(chunk_bytes);
        for _ in 0..n_chunks {
            encoder
                .add_ztxt_chunk(key.to_owned(), text.clone())
                .unwrap();
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[1, 2, 3]).unwrap();
        writer.finish().unwrap();
        bytes
    }

    #[test]
    fn text_over_the_total_budget_is_refused_however_it_is_split() {
        // 80 chunks of 1 MiB each: small on disk, over the 64 MiB budget together.
        let bomb = text_bomb("comment", 80, 1 << 20);
        assert!(bomb.len() < 1 << 20, "{} bytes on disk", bomb.len());
        let err = read_png_text(&bomb).unwrap_err();
        assert!(err.to_string().contains("64 MiB"), "{err}");
        // Under the budget, every chunk is read.
        let fine = text_bomb("comment", 3, 1 << 20);
        assert_eq!(read_png_text(&fine).unwrap().len(), 3);
    }

    #[test]
    fn the_workflow_is_read_without_inflating_other_chunks() {
        let bomb = text_bomb("comment", 80, 1 << 20);
        assert_eq!(read_png_workflow(&bomb).unwrap(), None);
        let mut bytes = Vec::new();
        write_png(
            &mut bytes,
            &picture(),
            &[(KEY_PARAMETERS, "x"), (KEY_WORKFLOW, "W")],
        )
        .unwrap();
        assert_eq!(read_png_workflow(&bytes).unwrap().as_deref(), Some("W"));
    }

    #[test]
    fn bad_keys_are_refused_before_writing() {
        let long_key = "k".repeat(80);
        for key in [
            "",
            " lead",
            "trail ",
            "two  spaces",
            "naïve",
            long_key.as_str(),
        ] {
            let mut bytes = Vec::new();
            let err = write_png(&mut bytes, &picture(), &[(key, "x")]).unwrap_err();
            assert!(
                matches!(err, ImagingError::InvalidTextKey { .. }),
                "{key:?}: {err}"
            );
            assert!(bytes.is_empty(), "nothing written for {key:?}");
        }
    }

    #[test]
    fn not_a_png_is_an_error() {
        assert!(matches!(
            read_png_text(b"GIF89a"),
            Err(ImagingError::PngDecode(_))
        ));
        let mut bytes = Vec::new();
        let err = write_png(&mut bytes, &RgbImage::new(0, 4), &[] as &[(&str, &str)]).unwrap_err();
        assert!(matches!(err, ImagingError::EmptyImage { .. }));
    }
}
