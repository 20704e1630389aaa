//! Image checks and clean-up: dimensions, metadata (EXIF with its GPS
//! position, XMP, IPTC, comments) removed from what is stored and served,
//! the EXIF orientation applied, and thumbnails.
//!
//! - JPEG: with an orientation other than "as stored", the image is decoded,
//!   turned upright and re-encoded (quality 90); otherwise the metadata
//!   segments (APP1, APP13, COM) are cut out and the pixels stay untouched.
//! - PNG: `eXIf`, `tEXt`, `zTXt`, `iTXt` and `tIME` chunks are cut out.
//! - WebP: `EXIF` and `XMP ` chunks are cut out (and their `VP8X` flags
//!   cleared). The orientation is not applied to WebP.
//! - GIF carries no EXIF.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Longest side of a thumbnail.
pub const THUMBNAIL_MAX: u32 = 320;

/// What [`clean`] made of an image.
#[derive(Debug)]
pub struct Cleaned {
    /// A new file to store instead of the upload, when anything changed.
    pub replaced: Option<tempfile::TempPath>,
    /// Width after orientation.
    pub width: u32,
    /// Height after orientation.
    pub height: u32,
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// More pixels than allowed (checked from the header, before decoding).
    #[error("image of {width}x{height} pixels is over the limit of {max} pixels")]
    TooLarge {
        /// Width the header states.
        width: u32,
        /// Height the header states.
        height: u32,
        /// The configured limit.
        max: u64,
    },
    /// Not a readable image of its type.
    #[error("{0}")]
    Unreadable(String),
    /// Reading or writing the files failed.
    #[error("image file: {0}")]
    Io(#[from] io::Error),
}

fn format_of(mime: &str) -> Option<ImageFormat> {
    Some(match mime {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::WebP,
        _ => return None,
    })
}

/// The decoder's own limits for an image of at most `max_pixels`: no side
/// longer than that, and no allocation beyond what such an image needs
/// (RGBA, 16 bits per channel), so a lying header cannot make it allocate
/// more.
fn decoder_limits(max_pixels: u64) -> Limits {
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 * 1024 * 1024));
    limits
}

/// An image reader over `input` from its start, with the decoder limits
/// for `max_pixels`.
fn reader<R: BufRead + Seek>(
    input: &mut R,
    format: ImageFormat,
    max_pixels: u64,
) -> io::Result<ImageReader<&mut R>> {
    input.rewind()?;
    let mut r = ImageReader::with_format(input, format);
    r.limits(decoder_limits(max_pixels));
    Ok(r)
}

/// Reads the dimensions from the header of the image in `input` (of type
/// `mime`) and refuses images over `max_pixels` before anything is
/// decoded.
pub fn checked_dimensions<R: BufRead + Seek>(
    input: &mut R,
    mime: &str,
    max_pixels: u64,
) -> Result<(ImageFormat, u32, u32), ImageError> {
    let format = format_of(mime)
        .ok_or_else(|| ImageError::Unreadable(format!("{mime} is not an image type")))?;
    let (width, height) = reader(input, format, u64::MAX)?
        .into_dimensions()
        .map_err(|e| ImageError::Unreadable(format!("unreadable {mime}: {e}")))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            max: max_pixels,
        });
    }
    Ok((format, width, height))
}

/// What [`clean_into`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing: the image is kept as uploaded (GIF).
    Untouched,
    /// A copy without metadata (it may equal the input when there was none).
    Stripped,
    /// Decoded, turned upright and encoded again (a JPEG with an
    /// orientation).
    Reencoded,
}

/// Checks that `input` is a readable image of type `mime`, at most
/// `max_pixels` large, and writes what should be stored instead to `out`
/// (see [`Rewrite`]). Returns the width and height after orientation.
/// Streams: only a JPEG whose orientation must be applied is decoded whole.
pub fn clean_into<R: BufRead + Seek, W: Write + Seek>(
    input: &mut R,
    mime: &str,
    max_pixels: u64,
    out: &mut W,
) -> Result<(Rewrite, u32, u32), ImageError> {
    let (format, width, height) = checked_dimensions(input, mime, max_pixels)?;
    input.rewind()?;
    match format {
        ImageFormat::Jpeg => {
            let mut decoder = image::codecs::jpeg::JpegDecoder::new(&mut *input)
                .map_err(|e| ImageError::Unreadable(format!("unreadable jpeg: {e}")))?;
            decoder
                .set_limits(decoder_limits(max_pixels))
                .map_err(|e| ImageError::Unreadable(format!("unreadable jpeg: {e}")))?;
            let orientation = decoder
                .orientation()
                .unwrap_or(image::metadata::Orientation::NoTransforms);
            if orientation == image::metadata::Orientation::NoTransforms {
                drop(decoder);
                input.rewind()?;
                strip_jpeg(input, out)?;
                return Ok((Rewrite::Stripped, width, height));
            }
            let mut img = DynamicImage::from_decoder(decoder)
                .map_err(|e| ImageError::Unreadable(format!("unreadable jpeg: {e}")))?;
            img.apply_orientation(orientation);
            encode_jpeg(&img, 90, out)?;
            Ok((Rewrite::Reencoded, img.width(), img.height()))
        }
        ImageFormat::Png => {
            strip_png(input, out)?;
            Ok((Rewrite::Stripped, width, height))
        }
        ImageFormat::WebP => {
            strip_webp(input, out)?;
            Ok((Rewrite::Stripped, width, height))
        }
        _ => Ok((Rewrite::Untouched, width, height)),
    }
}

/// Checks that the file at `path` is a readable image of type `mime`, at
/// most `max_pixels` large, and cleans it into a new file in `tmp_dir`
/// when anything must change (see [`clean_into`]).
pub fn clean(
    path: &Path,
    mime: &str,
    max_pixels: u64,
    tmp_dir: &Path,
) -> Result<Cleaned, ImageError> {
    let size = std::fs::metadata(path)?.len();
    let mut input = BufReader::new(File::open(path)?);
    let (out, out_path) = tempfile::Builder::new()
        .prefix("clean-")
        .tempfile_in(tmp_dir)?
        .into_parts();
    let mut output = BufWriter::new(out);
    let (rewrite, width, height) = clean_into(&mut input, mime, max_pixels, &mut output)?;
    let out = output.into_inner().map_err(|e| e.into_error())?;
    let replaced = match rewrite {
        Rewrite::Untouched => None,
        Rewrite::Stripped => (out.metadata()?.len() != size).then_some(out_path),
        Rewrite::Reencoded => Some(out_path),
    };
    Ok(Cleaned {
        replaced,
        width,
        height,
    })
}

fn encode_jpeg(img: &DynamicImage, quality: u8, out: &mut impl Write) -> Result<(), ImageError> {
    let rgb = img.to_rgb8();
    image::codecs::jpeg::JpegEncoder::new_with_quality(out, quality)
        .encode_image(&rgb)
        .map_err(|e| ImageError::Unreadable(format!("jpeg encoding failed: {e}")))
}

/// A JPEG thumbnail at most [`THUMBNAIL_MAX`] px on its longest side, of
/// the image in `input` (of type `mime`, at most `max_pixels` large).
pub fn thumbnail_of<R: BufRead + Seek>(
    input: &mut R,
    mime: &str,
    max_pixels: u64,
) -> Result<Vec<u8>, ImageError> {
    let (format, _, _) = checked_dimensions(input, mime, max_pixels)?;
    let img = reader(input, format, max_pixels)?
        .decode()
        .map_err(|e| ImageError::Unreadable(format!("unreadable {mime}: {e}")))?;
    let img = if img.width() > THUMBNAIL_MAX || img.height() > THUMBNAIL_MAX {
        img.thumbnail(THUMBNAIL_MAX, THUMBNAIL_MAX)
    } else {
        img
    };
    let mut out = Vec::new();
    encode_jpeg(&img, 80, &mut out)?;
    Ok(out)
}

/// [`thumbnail_of`] the image file at `path`.
pub fn thumbnail(path: &Path, mime: &str, max_pixels: u64) -> Result<Vec<u8>, ImageError> {
    thumbnail_of(&mut BufReader::new(File::open(path)?), mime, max_pixels)
}

fn read_u8(r: &mut impl Read) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(Some(b[0])),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copies `len` bytes (or what is left) from `r` to `w`, or skips them.
fn pass(r: &mut impl Read, w: &mut impl Write, len: u64, keep: bool) -> io::Result<()> {
    let mut part = r.take(len);
    if keep {
        io::copy(&mut part, w)?;
    } else {
        io::copy(&mut part, &mut io::sink())?;
    }
    Ok(())
}

/// Copies a JPEG without its APP1 (EXIF, XMP), APP13 (IPTC) and COM
/// segments.
pub fn strip_jpeg(r: &mut impl Read, w: &mut impl Write) -> io::Result<()> {
    let mut soi = [0u8; 2];
    let n = read_full(r, &mut soi)?;
    w.write_all(&soi[..n])?;
    let mut first = read_u8(r)?;
    while let Some(b0) = first {
        if b0 != 0xFF {
            w.write_all(&[b0])?;
            break;
        }
        let Some(marker) = read_u8(r)? else {
            w.write_all(&[b0])?;
            return Ok(());
        };
        // A fill byte: the marker starts at the next one.
        if marker == 0xFF {
            w.write_all(&[0xFF])?;
            first = Some(0xFF);
            continue;
        }
        // Start of scan: the rest is entropy-coded data and the trailer.
        if marker == 0xDA {
            w.write_all(&[b0, marker])?;
            break;
        }
        // Markers without a length.
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            w.write_all(&[b0, marker])?;
            first = read_u8(r)?;
            continue;
        }
        let mut len = [0u8; 2];
        let n = read_full(r, &mut len)?;
        let keep = !(marker == 0xE1 || marker == 0xED || marker == 0xFE);
        if keep || n < 2 {
            w.write_all(&[b0, marker])?;
            w.write_all(&len[..n])?;
        }
        if n < 2 {
            return Ok(());
        }
        let body = u64::from(u16::from_be_bytes(len)).saturating_sub(2);
        pass(r, w, body, keep)?;
        first = read_u8(r)?;
    }
    io::copy(r, w)?;
    Ok(())
}

/// Copies a PNG without metadata chunks.
pub fn strip_png(r: &mut impl Read, w: &mut impl Write) -> io::Result<()> {
    const DROP: [&[u8; 4]; 5] = [b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"];
    let mut signature = [0u8; 8];
    let n = read_full(r, &mut signature)?;
    w.write_all(&signature[..n])?;
    if n < 8 {
        return Ok(());
    }
    loop {
        let mut header = [0u8; 8];
        let n = read_full(r, &mut header)?;
        if n < 8 {
            w.write_all(&header[..n])?;
            return Ok(());
        }
        let len = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let keep = !DROP.iter().any(|d| d.as_slice() == &header[4..8]);
        if keep {
            w.write_all(&header)?;
        }
        // Data and CRC.
        pass(r, w, len + 4, keep)?;
    }
}

/// Copies a WebP without `EXIF` and `XMP ` chunks (and their `VP8X` flags),
/// then corrects the RIFF size.
pub fn strip_webp<W: Write + Seek>(r: &mut impl Read, w: &mut W) -> io::Result<()> {
    let mut riff = [0u8; 12];
    let n = read_full(r, &mut riff)?;
    w.write_all(&riff[..n])?;
    if n < 12 {
        return Ok(());
    }
    let mut written = 12u64;
    loop {
        let mut header = [0u8; 8];
        let n = read_full(r, &mut header)?;
        if n < 8 {
            w.write_all(&header[..n])?;
            written += n as u64;
            break;
        }
        let kind = &header[0..4];
        let len = u64::from(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        let padded = len + (len & 1);
        if kind == b"VP8X" && padded <= 64 {
            let mut body = vec![0u8; padded as usize];
            let got = read_full(r, &mut body)?;
            if let Some(flags) = body.first_mut() {
                // Flags: 0x08 EXIF, 0x04 XMP.
                *flags &= !(0x08 | 0x04);
            }
            w.write_all(&header)?;
            w.write_all(&body[..got])?;
            written += 8 + got as u64;
        } else if kind != b"EXIF" && kind != b"XMP " {
            w.write_all(&header)?;
            let mut part = r.take(padded);
            written += 8 + io::copy(&mut part, w)?;
        } else {
            pass(r, w, padded, false)?;
        }
    }
    let size = u32::try_from(written.saturating_sub(8)).unwrap_or(u32::MAX);
    w.flush()?;
    w.seek(SeekFrom::Start(4))?;
    w.write_all(&size.to_le_bytes())?;
    w.seek(SeekFrom::End(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 50_000_000;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::new_rgb8(w, h);
        let mut out = Vec::new();
        encode_jpeg(&img, 80, &mut out).expect("encode");
        out
    }

    /// Puts an APP1 EXIF segment (with the given orientation) after SOI.
    fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes());
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes());
        tiff.extend_from_slice(b"GPS 52.5200N 13.4050E");
        let mut seg = b"Exif\0\0".to_vec();
        seg.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((seg.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&seg);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// Cleans `data` as a file, returning the result and the new bytes.
    fn clean_bytes(data: &[u8], mime: &str) -> Result<(Cleaned, Option<Vec<u8>>), ImageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upload");
        std::fs::write(&path, data).expect("write");
        let c = clean(&path, mime, MAX, dir.path())?;
        let bytes = c
            .replaced
            .as_ref()
            .map(|p| std::fs::read(p).expect("read cleaned"));
        Ok((c, bytes))
    }

    #[test]
    fn jpeg_exif_is_cut_and_orientation_applied() {
        let plain = jpeg(40, 20);
        let tagged = with_exif(&plain, 1);
        let (c, bytes) = clean_bytes(&tagged, "image/jpeg").expect("clean");
        assert_eq!(bytes.expect("changed"), plain);
        assert_eq!((c.width, c.height), (40, 20));

        let rotated = with_exif(&plain, 6);
        let (c, bytes) = clean_bytes(&rotated, "image/jpeg").expect("clean");
        assert_eq!((c.width, c.height), (20, 40));
        let bytes = bytes.expect("changed");
        assert!(!bytes.windows(4).any(|w| w == b"Exif"));

        assert!(clean_bytes(&plain, "image/jpeg")
            .expect("clean")
            .1
            .is_none());
        assert!(clean_bytes(b"\xFF\xD8\xFFjunk", "image/jpeg").is_err());
    }

    /// A PNG that declares `w` x `h` pixels: a real 1x1 image with its
    /// IHDR size rewritten (and the CRC fixed).
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::new_rgb8(1, 1);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .expect("png");
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn pixel_bombs_are_refused_before_decoding() {
        let err = clean_bytes(&png_header(20_000, 20_000), "image/png").expect_err("bomb");
        assert!(
            matches!(err, ImageError::TooLarge { width: 20_000, .. }),
            "{err}"
        );
        // A JPEG whose frame header claims 14,000 x 14,000 with a rotation.
        let mut small = with_exif(&jpeg(8, 8), 6);
        let sof = small
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        small[sof + 5..sof + 7].copy_from_slice(&14_000u16.to_be_bytes());
        small[sof + 7..sof + 9].copy_from_slice(&14_000u16.to_be_bytes());
        let err = clean_bytes(&small, "image/jpeg").expect_err("bomb");
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn png_and_webp_metadata_is_cut_streaming() {
        let img = DynamicImage::new_rgb8(4, 3);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .expect("png");
        // A tEXt chunk after IHDR (which ends at byte 33).
        let mut body = b"tEXtkey\0secret".to_vec();
        let crc = crc32(&body);
        let mut tagged = png[..33].to_vec();
        tagged.extend_from_slice(&((body.len() - 4) as u32).to_be_bytes());
        tagged.append(&mut body);
        tagged.extend_from_slice(&crc.to_be_bytes());
        tagged.extend_from_slice(&png[33..]);
        let (c, bytes) = clean_bytes(&tagged, "image/png").expect("clean");
        assert_eq!(bytes.expect("changed"), png);
        assert_eq!((c.width, c.height), (4, 3));

        let mut webp = b"RIFF\0\0\0\0WEBP".to_vec();
        webp.extend_from_slice(b"VP8X");
        webp.extend_from_slice(&10u32.to_le_bytes());
        webp.extend_from_slice(&[0x0C, 0, 0, 0, 3, 0, 0, 2, 0, 0]);
        webp.extend_from_slice(b"EXIF");
        webp.extend_from_slice(&3u32.to_le_bytes());
        webp.extend_from_slice(b"GPS\0");
        let mut out = std::io::Cursor::new(Vec::new());
        strip_webp(&mut webp.as_slice(), &mut out).expect("strip");
        let out = out.into_inner();
        assert!(!out.windows(4).any(|w| w == b"EXIF"));
        assert_eq!(out[20], 0, "EXIF and XMP flags cleared");
        assert_eq!(
            u32::from_le_bytes([out[4], out[5], out[6], out[7]]) as usize,
            out.len() - 8
        );
    }

    #[test]
    fn thumbnails_are_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.jpg");
        std::fs::write(&path, jpeg(1000, 500)).expect("write");
        let t = thumbnail(&path, "image/jpeg", MAX).expect("thumb");
        let img = image::load_from_memory(&t).expect("decode");
        assert_eq!((img.width(), img.height()), (320, 160));
    }
}
