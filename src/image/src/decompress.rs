//! Bounded decompression of the formats Linux uses for kernel payloads and modules.
//!
//! Everything here reads untrusted bytes: a codec error is an [`DecompressError`], never a panic,
//! and no decoder may produce more than the caller's `limit`, so a small hostile input cannot
//! exhaust memory. Each decoder stops at the end of its first stream/frame and ignores what
//! follows (the kernel appends its uncompressed size after the compressed payload).

use std::io::Read;

/// A compression format, recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`), e.g. with the x86 BCJ filter the kernel uses.
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// LZ4's *legacy* frame (`02 21 4c 18`), which `lz4 -l` and the kernel's build write.
    Lz4Legacy,
    /// lzma "alone" (`5d 00 00`), which `lzma -9` writes.
    Lzma,
    /// bzip2 (`BZh`). Recognised only, to name it in an error.
    Bzip2,
    /// lzop (`89 4c 5a 4f`). Recognised only, to name it in an error.
    Lzo,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const LZMA_MAGIC: &[u8] = &[0x5d, 0x00, 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";
const LZO_MAGIC: &[u8] = &[0x89, 0x4c, 0x5a, 0x4f];

/// The largest block of an LZ4 legacy frame decompresses to this many bytes.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Memory liblzma may use for one stream (the kernel's xz payloads use a 32 MiB dictionary); a
/// hostile header asking for more is refused instead of allocated.
const LZMA_MEMLIMIT: u64 = 512 << 20;

/// The largest zstd window accepted, as a power of two: 128 MiB, what `zstd -22 --ultra` (the
/// kernel's setting) declares when compressing from a pipe. libzstd's default is the same today;
/// it is set explicitly because a kernel needs it, and it bounds what a hostile header can
/// allocate. (Pure-Rust decoders that stop at 100 MiB cannot read such kernels.)
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

impl Codec {
    /// The codec whose magic `data` starts with, if any.
    pub fn detect(data: &[u8]) -> Option<Codec> {
        let magics: [(&[u8], Codec); 6] = [
            (XZ_MAGIC, Codec::Xz),
            (ZSTD_MAGIC, Codec::Zstd),
            (&LZ4_LEGACY_MAGIC.to_le_bytes(), Codec::Lz4Legacy),
            (LZO_MAGIC, Codec::Lzo),
            (BZIP2_MAGIC, Codec::Bzip2),
            (LZMA_MAGIC, Codec::Lzma),
        ];
        if data.starts_with(GZIP_MAGIC) {
            return Some(Codec::Gzip);
        }
        magics
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|(_, codec)| *codec)
    }

    /// The codec's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Lz4Legacy => "lz4 (legacy frame)",
            Codec::Lzma => "lzma",
            Codec::Bzip2 => "bzip2",
            Codec::Lzo => "lzo",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why decompression failed. The caller adds what was being decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The codec is recognised but not supported.
    #[error("{0} is not supported (supported: gzip, xz, zstd, lz4 legacy, lzma)")]
    Unsupported(Codec),
    /// The compressed data is corrupt or truncated.
    #[error("corrupt {codec} data: {reason}")]
    Corrupt { codec: Codec, reason: String },
    /// The output would exceed the caller's limit.
    #[error("{codec} data decompresses to more than {limit} bytes")]
    TooLarge { codec: Codec, limit: usize },
}

/// Decompresses `data` with `codec`, producing at most `limit` bytes.
pub fn decompress(codec: Codec, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |e: std::io::Error| DecompressError::Corrupt {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Codec::Gzip => read_bounded(codec, flate2::read::GzDecoder::new(data), limit),
        Codec::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
                .map_err(|e| corrupt(e.into()))?;
            read_bounded(
                codec,
                liblzma::read::XzDecoder::new_stream(data, stream),
                limit,
            )
        }
        Codec::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT)
                .map_err(|e| corrupt(e.into()))?;
            read_bounded(
                codec,
                liblzma::read::XzDecoder::new_stream(data, stream),
                limit,
            )
        }
        Codec::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(data)
                .map_err(corrupt)?
                .single_frame();
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(corrupt)?;
            read_bounded(codec, decoder, limit)
        }
        Codec::Lz4Legacy => lz4_legacy(data, limit),
        Codec::Bzip2 | Codec::Lzo => Err(DecompressError::Unsupported(codec)),
    }
}

/// Reads `reader` to its end, failing if it yields more than `limit` bytes.
fn read_bounded(codec: Codec, reader: impl Read, limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { codec, limit });
    }
    if out.is_empty() {
        return Err(DecompressError::Corrupt {
            codec,
            reason: "no data decompressed".to_owned(),
        });
    }
    Ok(out)
}

/// Decodes an LZ4 legacy frame: the magic, then blocks of `[u32 LE compressed size][block]`,
/// each decompressing to at most 8 MiB. The frame has no end marker: it ends where the input
/// does, or where a size field cannot be a block (zero, larger than any block can be, or past the
/// end of the input) — the kernel appends its 4-byte uncompressed size there. A repeated magic
/// starts a concatenated frame.
fn lz4_legacy(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let codec = Codec::Lz4Legacy;
    let corrupt = |reason: String| DecompressError::Corrupt { codec, reason };
    let Some(rest) = data.strip_prefix(&LZ4_LEGACY_MAGIC.to_le_bytes()) else {
        return Err(corrupt("missing the legacy frame magic".to_owned()));
    };
    // A block's compressed size can exceed its decompressed size for incompressible data.
    let max_block = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let mut blocks = 0usize;
    while let Some(word) = rest.get(pos..pos + 4) {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        if word == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        let size = usize::try_from(word).unwrap_or(usize::MAX);
        let Some(block) = (size != 0 && size <= max_block)
            .then(|| rest.get(pos + 4..pos + 4 + size))
            .flatten()
        else {
            break;
        };
        // An LZ4 block expands at most about 255-fold (a match-length byte adds at most 255
        // bytes): size the buffer by that, so tiny hostile blocks cannot cost 8 MiB each.
        let room = LZ4_LEGACY_BLOCK.min(size.saturating_mul(255).saturating_add(64));
        let start = out.len();
        out.resize(start + room, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| corrupt(format!("block {blocks} at offset {}: {e}", pos + 4)))?;
        out.truncate(start + n);
        if out.len() > limit {
            return Err(DecompressError::TooLarge { codec, limit });
        }
        blocks += 1;
        pos += 4 + size;
    }
    if blocks == 0 || out.is_empty() {
        return Err(corrupt("no complete block".to_owned()));
    }
    tracing::debug!(
        blocks,
        bytes = out.len(),
        trailing = rest.len() - pos,
        "lz4 legacy frame decoded"
    );
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use std::io::Write;

    use super::*;

    /// Data that compresses but is not trivially repetitive.
    pub(crate) fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    b'a' + (i % 13) as u8
                }
            })
            .collect()
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// xz with the x86 BCJ filter and a CRC32 check, as the kernel's `xz_wrap.sh` writes it.
    pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
        let mut filters = liblzma::stream::Filters::new();
        filters.x86();
        filters.lzma2(&liblzma::stream::LzmaOptions::new_preset(6).unwrap());
        let stream =
            liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
                .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn lzma(data: &[u8]) -> Vec<u8> {
        let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
        let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 19).unwrap()
    }

    /// An LZ4 legacy frame with blocks of `block` input bytes (the format's is 8 MiB).
    pub(crate) fn lz4_legacy_frame(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&u32::try_from(c.len()).unwrap().to_le_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn detects_each_magic() {
        let data = sample(1000);
        assert_eq!(Codec::detect(&gzip(&data)), Some(Codec::Gzip));
        assert_eq!(Codec::detect(&xz(&data)), Some(Codec::Xz));
        assert_eq!(Codec::detect(&zstd(&data)), Some(Codec::Zstd));
        assert_eq!(Codec::detect(&lzma(&data)), Some(Codec::Lzma));
        assert_eq!(
            Codec::detect(&lz4_legacy_frame(&data, 100)),
            Some(Codec::Lz4Legacy)
        );
        assert_eq!(Codec::detect(b"BZh91AY&SY"), Some(Codec::Bzip2));
        assert_eq!(Codec::detect(b"\x89LZO\0\r\n"), Some(Codec::Lzo));
        assert_eq!(Codec::detect(b"\x7fELF"), None);
        assert_eq!(Codec::detect(b""), None);
    }

    #[test]
    fn every_supported_codec_round_trips_and_ignores_a_size_trailer() {
        let data = sample(300_000);
        let trailer = u32::try_from(data.len()).unwrap().to_le_bytes();
        for (codec, mut packed) in [
            (Codec::Gzip, gzip(&data)),
            (Codec::Xz, xz(&data)),
            (Codec::Zstd, zstd(&data)),
            (Codec::Lzma, lzma(&data)),
            (Codec::Lz4Legacy, lz4_legacy_frame(&data, 64 * 1024)),
        ] {
            assert_eq!(
                decompress(codec, &packed, 1 << 20).unwrap(),
                data,
                "{codec}"
            );
            packed.extend_from_slice(&trailer);
            assert_eq!(
                decompress(codec, &packed, 1 << 20).unwrap(),
                data,
                "{codec} with the kernel's size trailer"
            );
        }
    }

    #[test]
    fn zstd_with_the_kernels_128_mib_window_decodes() {
        // `zstd -22 --ultra` from a pipe (as the kernel build runs it) declares a 2^27 window.
        let data = sample(50_000);
        let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        e.include_contentsize(false).unwrap();
        e.window_log(ZSTD_WINDOW_LOG_MAX).unwrap();
        e.write_all(&data).unwrap();
        let packed = e.finish().unwrap();
        // Frame header descriptor: no content size, not single-segment, so a window byte
        // follows: exponent = window_log - 10 in its high five bits.
        assert_eq!(packed[4] & 0x20, 0, "single-segment frames carry no window");
        assert_eq!(u32::from(packed[5] >> 3) + 10, ZSTD_WINDOW_LOG_MAX);
        assert_eq!(decompress(Codec::Zstd, &packed, 1 << 20).unwrap(), data);
    }

    #[test]
    fn lz4_legacy_uses_full_size_blocks_and_concatenated_frames() {
        // Two 8 MiB blocks and a short one, as `lz4 -l` writes a kernel.
        let data = sample(2 * LZ4_LEGACY_BLOCK + 1234);
        let frame = lz4_legacy_frame(&data, LZ4_LEGACY_BLOCK);
        assert_eq!(
            decompress(Codec::Lz4Legacy, &frame, 64 << 20).unwrap(),
            data
        );
        let mut two = lz4_legacy_frame(&data[..5000], 4096);
        two.extend_from_slice(&lz4_legacy_frame(&data[5000..9000], 4096));
        assert_eq!(
            decompress(Codec::Lz4Legacy, &two, 1 << 20).unwrap(),
            data[..9000]
        );
    }

    #[test]
    fn lz4_legacy_refuses_a_corrupt_block_and_an_empty_frame() {
        let data = sample(100_000);
        let mut frame = lz4_legacy_frame(&data, 50_000);
        // Break the first block's first token: it now claims a match beyond the output start.
        let len = frame.len();
        frame[8..len / 2].fill(0xff);
        assert!(matches!(
            decompress(Codec::Lz4Legacy, &frame, 1 << 20),
            Err(DecompressError::Corrupt { .. })
        ));
        let empty = LZ4_LEGACY_MAGIC.to_le_bytes();
        let err = decompress(Codec::Lz4Legacy, &empty, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("no complete block"), "{err}");
    }

    #[test]
    fn output_beyond_the_limit_is_refused() {
        let data = vec![0u8; 200_000];
        for (codec, packed) in [
            (Codec::Gzip, gzip(&data)),
            (Codec::Xz, xz(&data)),
            (Codec::Zstd, zstd(&data)),
            (Codec::Lz4Legacy, lz4_legacy_frame(&data, 65536)),
        ] {
            assert!(
                matches!(
                    decompress(codec, &packed, 100_000),
                    Err(DecompressError::TooLarge { limit: 100_000, .. })
                ),
                "{codec}"
            );
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        let data = sample(100_000);
        for (codec, packed) in [
            (Codec::Gzip, gzip(&data)),
            (Codec::Xz, xz(&data)),
            (Codec::Zstd, zstd(&data)),
            (Codec::Lzma, lzma(&data)),
        ] {
            let cut = &packed[..packed.len() / 2];
            assert!(
                matches!(
                    decompress(codec, cut, 1 << 20),
                    Err(DecompressError::Corrupt { .. })
                ),
                "{codec}"
            );
        }
        assert!(matches!(
            decompress(Codec::Bzip2, b"BZh9", 10),
            Err(DecompressError::Unsupported(Codec::Bzip2))
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_input_never_panics(
            codec in proptest::sample::select(vec![
                Codec::Gzip, Codec::Xz, Codec::Zstd, Codec::Lz4Legacy, Codec::Lzma,
            ]),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        ) {
            // Give each decoder its magic, so the random bytes reach the decoding itself.
            let mut input = match codec {
                Codec::Gzip => GZIP_MAGIC.to_vec(),
                Codec::Xz => XZ_MAGIC.to_vec(),
                Codec::Zstd => ZSTD_MAGIC.to_vec(),
                Codec::Lz4Legacy => LZ4_LEGACY_MAGIC.to_le_bytes().to_vec(),
                _ => LZMA_MAGIC.to_vec(),
            };
            input.extend_from_slice(&body);
            let _ = decompress(codec, &input, 1 << 20);
        }
    }
}
