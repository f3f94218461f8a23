//! An uncompressed ELF `vmlinux` out of an x86 bzImage, and the kernel release it names.
//!
//! Firecracker boots only an uncompressed ELF kernel; distributions ship bzImages. A bzImage is a
//! real-mode setup (whose header is described by the kernel's `Documentation/x86/boot.rst`)
//! followed by protected-mode code that holds the compressed kernel as its *payload*: the header
//! fields `payload_offset`/`payload_length` (boot protocol 2.08+) locate it relative to the start
//! of the protected-mode code, at `(setup_sects + 1) * 512`. The payload is the stripped vmlinux
//! ELF, compressed with the codec the kernel was configured with, followed by its uncompressed
//! size as a little-endian u32 (the build's `size_append`).

use std::path::{Path, PathBuf};

use crate::decompress::{self, Codec, DecompressError};
use crate::elf::{self, EM_X86_64, ET_EXEC, ElfError};

/// The largest vmlinux accepted (Debian's is about 50 MiB).
pub const MAX_VMLINUX_LEN: usize = 512 << 20;

const OFF_SETUP_SECTS: usize = 0x1f1;
const OFF_BOOT_FLAG: usize = 0x1fe;
const OFF_MAGIC: usize = 0x202;
const OFF_VERSION: usize = 0x206;
const OFF_KERNEL_VERSION: usize = 0x20e;
const OFF_PAYLOAD_OFFSET: usize = 0x248;
const OFF_PAYLOAD_LENGTH: usize = 0x24c;
/// The header ends after `payload_length`.
const HEADER_END: usize = 0x250;
const BOOT_FLAG: u16 = 0xaa55;
const MAGIC: &[u8; 4] = b"HdrS";
/// Boot protocol 2.08 added the payload fields.
const MIN_PROTOCOL: u16 = 0x0208;
/// The version string is this long at most.
const MAX_VERSION_LEN: usize = 512;

/// Why a bzImage yields no vmlinux or no release.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    /// Too short to hold the setup header.
    #[error("bzImage is {len} bytes, too short for the x86 setup header ({HEADER_END} bytes)")]
    TooShort { len: usize },
    /// No `HdrS` magic at 0x202.
    #[error("not an x86 bzImage: no \"HdrS\" magic at 0x202 (found {found:02x?})")]
    NotBzImage { found: Vec<u8> },
    /// The boot flag at 0x1fe is not 0xAA55.
    #[error("not an x86 bzImage: boot flag at 0x1fe is {0:#06x}, expected 0xaa55")]
    BadBootFlag(u16),
    /// The boot protocol predates the payload fields.
    #[error(
        "bzImage boot protocol {major}.{minor:02} has no payload fields (2.08 or later needed)"
    )]
    OldProtocol { major: u8, minor: u8 },
    /// The payload lies outside the file.
    #[error(
        "bzImage payload (offset {offset:#x}, {length} bytes) lies outside the file ({file_len} bytes)"
    )]
    PayloadOutOfBounds {
        offset: usize,
        length: usize,
        file_len: usize,
    },
    /// The payload's compression is not recognised.
    #[error("bzImage payload has unrecognised compression (starts with {0:02x?})")]
    UnknownCompression(Vec<u8>),
    /// Decompressing the payload failed.
    #[error("decompressing the bzImage payload failed: {0}")]
    Decompress(#[from] DecompressError),
    /// The payload decompressed to a size other than the one appended to it.
    #[error(
        "bzImage payload ({codec}) decompressed to {got} bytes, but its size trailer says {expected}"
    )]
    SizeMismatch {
        codec: Codec,
        got: usize,
        expected: u32,
    },
    /// The decompressed payload is not an ELF64 little-endian file.
    #[error("the decompressed kernel is not a usable ELF: {0}")]
    NotElf(#[from] ElfError),
    /// The ELF is for another machine.
    #[error("the decompressed kernel is an ELF for machine {0:#x}, not x86-64 (0x3e)")]
    WrongMachine(u16),
    /// The ELF is not an executable.
    #[error("the decompressed kernel is an ELF of type {0}, not an executable (2)")]
    NotExecutable(u16),
    /// The header has no kernel version string.
    #[error("bzImage has no kernel version string (kernel_version field is 0)")]
    NoVersion,
    /// The kernel version string is missing, unterminated or not printable ASCII.
    #[error("bzImage kernel version string at {offset:#x} is {reason}")]
    BadVersion { offset: usize, reason: &'static str },
    /// The release (first word of the version string) is unusable as a path component.
    #[error(
        "bzImage kernel release {0:?} is not a valid release (letters, digits, '.', '-', '+', '_', '~')"
    )]
    BadRelease(String),
    /// A file could not be read.
    #[error("reading kernel {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file's contents were refused.
    #[error("kernel {path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<VmlinuxError>,
    },
}

/// The setup-header fields this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version, e.g. 0x020f for 2.15.
    pub protocol: u16,
    /// Size of the real-mode setup in 512-byte sectors (0 in the file means 4).
    pub setup_sects: u8,
    /// Offset of the payload from the start of the protected-mode code.
    pub payload_offset: u32,
    /// Length of the payload, its size trailer included.
    pub payload_length: u32,
    /// The kernel version string's offset less 0x200, or 0 for none.
    pub kernel_version: u16,
}

impl SetupHeader {
    /// File offset of the protected-mode code.
    pub fn protected_mode_start(&self) -> usize {
        (usize::from(self.setup_sects) + 1) * 512
    }
}

fn u16_at(d: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([d[off], d[off + 1]])
}

fn u32_at(d: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]])
}

/// Parses and checks the setup header.
pub fn setup_header(bzimage: &[u8]) -> Result<SetupHeader, VmlinuxError> {
    if bzimage.len() < HEADER_END {
        return Err(VmlinuxError::TooShort { len: bzimage.len() });
    }
    // Fixed offsets below HEADER_END: the length check above makes the indexing infallible.
    if &bzimage[OFF_MAGIC..OFF_MAGIC + 4] != MAGIC {
        return Err(VmlinuxError::NotBzImage {
            found: bzimage[OFF_MAGIC..OFF_MAGIC + 4].to_vec(),
        });
    }
    let boot_flag = u16_at(bzimage, OFF_BOOT_FLAG);
    if boot_flag != BOOT_FLAG {
        return Err(VmlinuxError::BadBootFlag(boot_flag));
    }
    let protocol = u16_at(bzimage, OFF_VERSION);
    if protocol < MIN_PROTOCOL {
        let [minor, major] = protocol.to_le_bytes();
        return Err(VmlinuxError::OldProtocol { major, minor });
    }
    let setup_sects = match bzimage[OFF_SETUP_SECTS] {
        0 => 4,
        n => n,
    };
    Ok(SetupHeader {
        protocol,
        setup_sects,
        payload_offset: u32_at(bzimage, OFF_PAYLOAD_OFFSET),
        payload_length: u32_at(bzimage, OFF_PAYLOAD_LENGTH),
        kernel_version: u16_at(bzimage, OFF_KERNEL_VERSION),
    })
}

/// The compressed payload, size trailer included.
pub fn payload(bzimage: &[u8]) -> Result<&[u8], VmlinuxError> {
    let header = setup_header(bzimage)?;
    let to_usize = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
    let offset = header
        .protected_mode_start()
        .saturating_add(to_usize(header.payload_offset));
    let length = to_usize(header.payload_length);
    offset
        .checked_add(length)
        .and_then(|end| bzimage.get(offset..end))
        .filter(|p| !p.is_empty())
        .ok_or(VmlinuxError::PayloadOutOfBounds {
            offset,
            length,
            file_len: bzimage.len(),
        })
}

/// The payload's compression.
pub fn payload_codec(bzimage: &[u8]) -> Result<Codec, VmlinuxError> {
    let payload = payload(bzimage)?;
    Codec::detect(payload)
        .ok_or_else(|| VmlinuxError::UnknownCompression(payload[..payload.len().min(8)].to_vec()))
}

/// Decompresses the bzImage's payload and checks that it is an x86-64 ELF executable.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, VmlinuxError> {
    let payload = payload(bzimage)?;
    let codec = payload_codec(bzimage)?;
    let vmlinux = decompress::decompress(codec, payload, MAX_VMLINUX_LEN)?;
    // The build appends the uncompressed size; a mismatch means a decoder stopped early (an LZ4
    // legacy frame has no end marker) or the payload is damaged.
    if let Some(trailer) = payload
        .len()
        .checked_sub(4)
        .and_then(|at| payload.get(at..))
    {
        let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        if u32::try_from(vmlinux.len()).ok() != Some(expected) {
            return Err(VmlinuxError::SizeMismatch {
                codec,
                got: vmlinux.len(),
                expected,
            });
        }
    }
    verify_vmlinux(&vmlinux)?;
    tracing::debug!(%codec, bytes = vmlinux.len(), "extracted vmlinux from bzImage");
    Ok(vmlinux)
}

/// Checks that `elf` is what Firecracker boots: ELF64, little-endian, x86-64, an executable.
pub fn verify_vmlinux(elf: &[u8]) -> Result<(), VmlinuxError> {
    let parsed = elf::parse(elf)?;
    if parsed.machine != EM_X86_64 {
        return Err(VmlinuxError::WrongMachine(parsed.machine));
    }
    if parsed.e_type != ET_EXEC {
        return Err(VmlinuxError::NotExecutable(parsed.e_type));
    }
    Ok(())
}

/// Reads a bzImage file and extracts its vmlinux; errors name the file.
pub fn extract_vmlinux_file(path: &Path) -> Result<Vec<u8>, VmlinuxError> {
    let bzimage = std::fs::read(path).map_err(|source| VmlinuxError::Read {
        path: path.to_owned(),
        source,
    })?;
    extract_vmlinux(&bzimage).map_err(|e| VmlinuxError::InFile {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// The kernel's version string, e.g. `6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1
/// SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)`.
pub fn kernel_version(bzimage: &[u8]) -> Result<&str, VmlinuxError> {
    let header = setup_header(bzimage)?;
    if header.kernel_version == 0 {
        return Err(VmlinuxError::NoVersion);
    }
    let offset = usize::from(header.kernel_version) + 0x200;
    let bad = |reason| VmlinuxError::BadVersion { offset, reason };
    let tail = bzimage.get(offset..).ok_or(bad("outside the file"))?;
    let tail = &tail[..tail.len().min(MAX_VERSION_LEN)];
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(bad("not NUL-terminated"))?;
    let version = std::str::from_utf8(&tail[..end])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .ok_or(bad("empty or not printable ASCII"))?;
    Ok(version)
}

/// The kernel release (`uname -r`): the first word of the version string, e.g.
/// `6.1.0-28-cloud-amd64`. It names `lib/modules/<release>`, so it is checked to be one plain
/// path component.
pub fn kernel_release(bzimage: &[u8]) -> Result<&str, VmlinuxError> {
    let version = kernel_version(bzimage)?;
    let release = version.split(' ').next().unwrap_or_default();
    if !is_valid_release(release) {
        return Err(VmlinuxError::BadRelease(release.to_owned()));
    }
    Ok(release)
}

/// Whether `release` is a plausible kernel release and a single, harmless path component.
pub fn is_valid_release(release: &str) -> bool {
    !release.is_empty()
        && release.len() <= 64
        && release != "."
        && release != ".."
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+_~".contains(&b))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;
    use crate::decompress::tests as codecs;
    use crate::elf::tests::build as build_elf;

    const VERSION: &str =
        "6.1.0-99-test-amd64 (nobody@example.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1";

    /// A fake kernel: an x86-64 ELF executable with some text.
    pub(crate) fn fake_vmlinux() -> Vec<u8> {
        build_elf(ET_EXEC, EM_X86_64, &[(".text", &codecs::sample(200_000))])
    }

    /// A minimal bzImage around `compressed` (the size trailer is appended here).
    pub(crate) fn fake_bzimage(compressed: &[u8], uncompressed_len: usize) -> Vec<u8> {
        let setup_sects = 2u8;
        let pm_start = (usize::from(setup_sects) + 1) * 512;
        let mut out = vec![0u8; pm_start];
        out[OFF_SETUP_SECTS] = setup_sects;
        out[OFF_BOOT_FLAG..OFF_BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        out[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(MAGIC);
        out[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        // The version string sits in the setup code, at 0x200 + kernel_version.
        let at = 0x300usize;
        out[at..at + VERSION.len()].copy_from_slice(VERSION.as_bytes());
        out[OFF_KERNEL_VERSION..OFF_KERNEL_VERSION + 2]
            .copy_from_slice(&u16::try_from(at - 0x200).unwrap().to_le_bytes());
        // Protected-mode code: a fake decompressor stub, then the payload, then more code.
        let stub = 0x180usize;
        out.extend(std::iter::repeat_n(0xccu8, stub));
        let mut payload = compressed.to_vec();
        payload.extend_from_slice(&u32::try_from(uncompressed_len).unwrap().to_le_bytes());
        out[OFF_PAYLOAD_OFFSET..OFF_PAYLOAD_OFFSET + 4]
            .copy_from_slice(&u32::try_from(stub).unwrap().to_le_bytes());
        out[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4]
            .copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend(std::iter::repeat_n(0x90u8, 300));
        out
    }

    fn compressed_with_each_codec(data: &[u8]) -> Vec<(Codec, Vec<u8>)> {
        vec![
            (Codec::Lz4Legacy, codecs::lz4_legacy_frame(data, 8 << 20)),
            (Codec::Gzip, codecs::gzip(data)),
            (Codec::Xz, codecs::xz(data)),
            (Codec::Zstd, codecs::zstd(data)),
            (Codec::Lzma, codecs::lzma(data)),
        ]
    }

    #[test]
    fn extracts_the_elf_from_each_codec() {
        let vmlinux = fake_vmlinux();
        for (codec, packed) in compressed_with_each_codec(&vmlinux) {
            let bz = fake_bzimage(&packed, vmlinux.len());
            assert_eq!(payload_codec(&bz).unwrap(), codec);
            assert_eq!(extract_vmlinux(&bz).unwrap(), vmlinux, "{codec}");
        }
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let mut bz = fake_bzimage(b"x", 1);
        bz[OFF_SETUP_SECTS] = 0;
        let header = setup_header(&bz).unwrap();
        assert_eq!(header.setup_sects, 4);
        assert_eq!(header.protected_mode_start(), 2560);
        assert_eq!(header.protocol, 0x020f);
    }

    #[test]
    fn reads_version_and_release() {
        let bz = fake_bzimage(b"x", 1);
        assert_eq!(kernel_version(&bz).unwrap(), VERSION);
        assert_eq!(kernel_release(&bz).unwrap(), "6.1.0-99-test-amd64");
    }

    #[test]
    fn hostile_version_strings_are_refused() {
        let mut bz = fake_bzimage(b"x", 1);
        bz[0x300..0x303].copy_from_slice(b"../");
        assert!(matches!(
            kernel_release(&bz),
            Err(VmlinuxError::BadRelease(r)) if r.starts_with("../")
        ));
        let mut bz = fake_bzimage(b"x", 1);
        bz[0x300] = 0x07;
        assert!(matches!(
            kernel_version(&bz),
            Err(VmlinuxError::BadVersion { .. })
        ));
        let mut bz = fake_bzimage(b"x", 1);
        bz[OFF_KERNEL_VERSION..OFF_KERNEL_VERSION + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
        let err = kernel_version(&bz).unwrap_err();
        assert!(err.to_string().contains("outside the file"), "{err}");
        bz[OFF_KERNEL_VERSION..OFF_KERNEL_VERSION + 2].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(kernel_version(&bz), Err(VmlinuxError::NoVersion)));
        // Unterminated: the string runs to the end of the file.
        let mut bz = fake_bzimage(b"x", 1);
        let len = bz.len();
        bz[OFF_KERNEL_VERSION..OFF_KERNEL_VERSION + 2]
            .copy_from_slice(&u16::try_from(len - 0x200 - 3).unwrap().to_le_bytes());
        bz[len - 3..].copy_from_slice(b"abc");
        let err = kernel_version(&bz).unwrap_err();
        assert!(err.to_string().contains("not NUL-terminated"), "{err}");
    }

    #[test]
    fn hostile_headers_are_errors() {
        let vmlinux = fake_vmlinux();
        let good = fake_bzimage(&codecs::gzip(&vmlinux), vmlinux.len());

        assert!(matches!(
            extract_vmlinux(&good[..0x100]),
            Err(VmlinuxError::TooShort { len: 0x100 })
        ));
        let mut bz = good.clone();
        bz[OFF_MAGIC] = b'X';
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(VmlinuxError::NotBzImage { .. })
        ));
        let mut bz = good.clone();
        bz[OFF_BOOT_FLAG] = 0;
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(VmlinuxError::BadBootFlag(0xaa00))
        ));
        let mut bz = good.clone();
        bz[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        let err = extract_vmlinux(&bz).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bzImage boot protocol 2.06 has no payload fields (2.08 or later needed)"
        );
        // Payload running past the end of the file, and an offset near u32::MAX.
        let mut bz = good.clone();
        bz[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4]
            .copy_from_slice(&u32::try_from(good.len()).unwrap().to_le_bytes());
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(VmlinuxError::PayloadOutOfBounds { .. })
        ));
        let mut bz = good.clone();
        bz[OFF_PAYLOAD_OFFSET..OFF_PAYLOAD_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(VmlinuxError::PayloadOutOfBounds { .. })
        ));
        // Truncated file: the payload no longer fits.
        assert!(matches!(
            extract_vmlinux(&good[..good.len() - 400]),
            Err(VmlinuxError::PayloadOutOfBounds { .. })
        ));
    }

    #[test]
    fn unknown_and_unsupported_compression_are_errors() {
        let bz = fake_bzimage(b"\x7fELF not compressed", 19);
        let err = extract_vmlinux(&bz).unwrap_err();
        assert!(matches!(err, VmlinuxError::UnknownCompression(_)), "{err}");
        let bz = fake_bzimage(b"BZh91AY&SY", 10);
        let err = extract_vmlinux(&bz).unwrap_err();
        assert!(err.to_string().contains("bzip2 is not supported"), "{err}");
    }

    #[test]
    fn a_damaged_payload_is_refused() {
        let vmlinux = fake_vmlinux();
        // Corrupt deflate data.
        let mut packed = codecs::gzip(&vmlinux);
        let mid = packed.len() / 2;
        packed[mid..mid + 64].fill(0x55);
        let err = extract_vmlinux(&fake_bzimage(&packed, vmlinux.len())).unwrap_err();
        assert!(matches!(err, VmlinuxError::Decompress(_)), "{err}");
        // An LZ4 frame missing its last block decodes to less than the trailer says.
        let mut frame = codecs::lz4_legacy_frame(&vmlinux, 64 * 1024);
        let last = lz4_flex::block::compress(&vmlinux[vmlinux.len() / 65536 * 65536..]);
        frame.truncate(frame.len() - last.len() - 4);
        let err = extract_vmlinux(&fake_bzimage(&frame, vmlinux.len())).unwrap_err();
        assert!(matches!(err, VmlinuxError::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn a_payload_that_is_not_an_x86_64_executable_is_refused() {
        let text = b"just some text, no ELF at all, long enough to be a header ....".repeat(4);
        let bz = fake_bzimage(&codecs::zstd(&text), text.len());
        let err = extract_vmlinux(&bz).unwrap_err();
        assert!(
            matches!(err, VmlinuxError::NotElf(ElfError::BadMagic(_))),
            "{err}"
        );
        let arm = build_elf(ET_EXEC, 0xb7, &[(".text", b"\0\0\0\0")]);
        let bz = fake_bzimage(&codecs::gzip(&arm), arm.len());
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(VmlinuxError::WrongMachine(0xb7))
        ));
        let module = build_elf(elf::ET_REL, EM_X86_64, &[(".text", b"\0\0\0\0")]);
        let bz = fake_bzimage(&codecs::xz(&module), module.len());
        assert!(matches!(
            extract_vmlinux(&bz),
            Err(VmlinuxError::NotExecutable(1))
        ));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("vmlinuz-missing");
        let err = extract_vmlinux_file(&missing).unwrap_err();
        assert!(err.to_string().contains("vmlinuz-missing"), "{err}");
        let junk = dir.path().join("vmlinuz-junk");
        std::fs::write(&junk, b"junk").unwrap();
        let err = extract_vmlinux_file(&junk).unwrap_err();
        assert!(
            err.to_string().contains("vmlinuz-junk") && err.to_string().contains("too short"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
        ) {
            let _ = extract_vmlinux(&body);
            let _ = kernel_release(&body);
        }

        /// Random bytes behind a valid header reach the payload and codec paths too.
        #[test]
        fn random_payloads_never_panic(
            magic in proptest::sample::select(vec![
                &b"\x1f\x8b"[..], b"\xfd7zXZ\0", b"\x28\xb5\x2f\xfd", b"\x02\x21\x4c\x18",
                b"\x5d\0\0", b"",
            ]),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            offset in 0u32..0x400,
            length in 0u32..0x1000,
            version in 0u16..0x800,
        ) {
            let mut payload = magic.to_vec();
            payload.extend_from_slice(&body);
            let mut bz = fake_bzimage(&payload, body.len());
            bz[OFF_PAYLOAD_OFFSET..OFF_PAYLOAD_OFFSET + 4].copy_from_slice(&offset.to_le_bytes());
            bz[OFF_PAYLOAD_LENGTH..OFF_PAYLOAD_LENGTH + 4].copy_from_slice(&length.to_le_bytes());
            bz[OFF_KERNEL_VERSION..OFF_KERNEL_VERSION + 2].copy_from_slice(&version.to_le_bytes());
            let _ = extract_vmlinux(&bz);
            let _ = kernel_release(&bz);
        }
    }
}
