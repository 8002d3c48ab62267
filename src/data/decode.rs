//! Record bytes -> 8-bit RGB pixels (HWC). JPEGs go through zune-jpeg (SIMD; baseline and progressive,
//! grayscale and CMYK/YCCK converted to RGB) and are turned upright by their EXIF orientation; raw
//! records are copied, grayscale replicated to three channels. Other formats (PNG, ...) found by
//! `prepare` in an image tree are decoded by the `image` crate.

use image::metadata::Orientation;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use super::format::Encoding;
use super::reader::Record;

/// An 8-bit RGB image, row-major HWC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        RgbImage { width, height, data }
    }
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// True when `bytes` start with the JPEG SOI marker.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF
}

/// Decodes a JPEG to upright RGB. `strict` makes zune-jpeg reject damaged streams (truncated data,
/// bad Huffman codes) instead of filling in grey, and also catches a file that was cut and closed again
/// with an end-of-image marker (see [`pad_scan_end`]); `prepare` is strict, the loader is not.
pub fn decode_jpeg(bytes: &[u8], strict: bool) -> Result<RgbImage, String> {
    if !strict {
        return decode_jpeg_stream(bytes, false);
    }
    let eoi = end_of_image(bytes)?;
    match decode_jpeg_stream(&pad_scan_end(bytes, eoi), true) {
        Ok(img) => Ok(img),
        // The padded stream failed: either the file is damaged inside (the plain decode names how), or
        // its scans ended early and the decoder read the filler (the plain decode alone succeeds).
        Err(_) => match decode_jpeg_stream(bytes, true) {
            Err(e) => Err(e),
            Ok(_) => Err("JPEG truncated: its scan data ends before the last block (a cut file closed with an \
                          end-of-image marker)"
                .to_string()),
        },
    }
}

fn decode_jpeg_stream(bytes: &[u8], strict: bool) -> Result<RgbImage, String> {
    let options = DecoderOptions::default()
        .set_strict_mode(strict)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| format!("JPEG header: {e:?}"))?;
    let info = decoder.info().ok_or("JPEG header: no frame information")?;
    let (width, height) = (info.width as u32, info.height as u32);
    if width == 0 || height == 0 {
        return Err(format!("JPEG declares an empty {width}x{height} image"));
    }
    let orientation = decoder.exif().and_then(|exif| Orientation::from_exif_chunk(exif));
    let out_len = decoder.output_buffer_size().ok_or("JPEG: output size overflows")?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) || out_len != width as usize * height as usize * 3 {
        return Err(format!("JPEG: decoder cannot produce RGB for colour space {:?}", decoder.input_colorspace()));
    }
    let mut data = vec![0u8; out_len];
    decoder.decode_into(&mut data).map_err(|e| format!("JPEG data: {e:?}"))?;
    let img = RgbImage::new(width, height, data);
    Ok(match orientation {
        Some(o) if o != Orientation::NoTransforms => orient(img, o)?,
        _ => img,
    })
}

/// A complete JPEG has an end-of-image marker (FF D9) after its last start-of-scan (FF DA). Neither
/// can occur inside entropy-coded data (an FF there is followed by 00 or a restart marker), so a file
/// cut anywhere after its headers fails this check; zune-jpeg alone would decode the rest as grey.
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    end_of_image(bytes).map(|_| ())
}

/// The offset of the end-of-image marker that closes the last scan (see [`check_jpeg_complete`]).
fn end_of_image(bytes: &[u8]) -> Result<usize, String> {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).ok_or("JPEG has no scan (FF DA) marker")?;
    match bytes[last_scan..].windows(2).position(|w| w == [0xFF, 0xD9]) {
        Some(i) => Ok(last_scan + i),
        None => Err(format!("JPEG truncated: no end-of-image marker after the last scan ({} bytes)", bytes.len())),
    }
}

/// Filler put before the end-of-image marker by [`pad_scan_end`]: stuffed 0xFF bytes (FF 00), i.e.
/// entropy-coded data that is all 1 bits.
const SCAN_FILLER: [u8; 2] = [0xFF, 0x00];
const SCAN_FILLER_REPEAT: usize = 64;

/// `bytes` with 64 stuffed 0xFF bytes inserted before the end-of-image marker at `eoi`.
///
/// A file cut inside its entropy-coded data and closed with FF D9 passes [`check_jpeg_complete`], and
/// zune-jpeg decodes its missing MCUs from zero bits without an error (a grey or flat band). In a
/// complete file the decoder stops after the last MCU and never reads the filler (between scans it skips
/// FF 00 while looking for the next marker), so the image is unchanged. In a cut one it must decode the
/// missing MCUs from the filler: 16 one bits are no Huffman code of any table (JPEG reserves the
/// all-ones code word, spec Annex C), so the decode fails. Not caught: a progressive file cut exactly
/// between two scans (its earlier scans give a complete, coarser image) and a file whose Huffman tables
/// break the all-ones rule.
pub fn pad_scan_end(bytes: &[u8], eoi: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + SCAN_FILLER.len() * SCAN_FILLER_REPEAT);
    out.extend_from_slice(&bytes[..eoi]);
    for _ in 0..SCAN_FILLER_REPEAT {
        out.extend_from_slice(&SCAN_FILLER);
    }
    out.extend_from_slice(&bytes[eoi..]);
    out
}

/// Applies an EXIF orientation (rotate/flip to upright).
pub fn orient(img: RgbImage, o: Orientation) -> Result<RgbImage, String> {
    let (w, h) = (img.width, img.height);
    let buf = image::RgbImage::from_raw(w, h, img.data).ok_or(format!("orient: buffer does not hold {w}x{h}x3"))?;
    let mut dynamic = image::DynamicImage::ImageRgb8(buf);
    dynamic.apply_orientation(o);
    let rgb = dynamic.into_rgb8();
    Ok(RgbImage::new(rgb.width(), rgb.height(), rgb.into_raw()))
}

/// Decodes any image format the `image` crate knows (used by `prepare` for non-JPEG files).
pub fn decode_other(bytes: &[u8]) -> Result<RgbImage, String> {
    let img = image::load_from_memory(bytes).map_err(|e| format!("not a decodable image ({e})"))?;
    let rgb = img.into_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err("empty image".into());
    }
    Ok(RgbImage::new(rgb.width(), rgb.height(), rgb.into_raw()))
}

/// Raw HWC pixels with 1 or 3 channels -> RGB.
pub fn raw_to_rgb(bytes: &[u8], width: u32, height: u32, channels: u32) -> Result<RgbImage, String> {
    let n = width as usize * height as usize;
    match channels {
        3 if bytes.len() == n * 3 => Ok(RgbImage::new(width, height, bytes.to_vec())),
        1 if bytes.len() == n => Ok(RgbImage::new(width, height, bytes.iter().flat_map(|&v| [v, v, v]).collect())),
        _ => Err(format!("raw record of {} bytes does not hold {width}x{height}x{channels}", bytes.len())),
    }
}

/// Decodes one record of a packed dataset to RGB.
pub fn decode_record(rec: &Record<'_>, encoding: Encoding, channels: u32) -> Result<RgbImage, String> {
    match encoding {
        Encoding::Jpeg => decode_jpeg(rec.bytes, false),
        Encoding::Raw => raw_to_rgb(rec.bytes, rec.width, rec.height, channels),
    }
}
