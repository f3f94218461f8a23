//! Just enough ELF64 parsing to check what a file is and find a section by name.
//!
//! Input is untrusted: every offset is bounds-checked and a bad one is an [`ElfError`].

/// `e_type` of a relocatable object (a kernel module).
pub const ET_REL: u16 = 1;
/// `e_type` of an executable (vmlinux).
pub const ET_EXEC: u16 = 2;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 0x3e;

const HEADER_LEN: usize = 64;
const SECTION_HEADER_LEN: usize = 64;
const SHT_NOBITS: u32 = 8;
const SHN_XINDEX: u16 = 0xffff;

/// Why bytes are not the ELF file they should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Shorter than an ELF64 header.
    #[error("{len} bytes is too short for an ELF64 header")]
    TooShort { len: usize },
    /// No `\x7fELF` magic.
    #[error("no ELF magic (starts with {0:02x?})")]
    BadMagic(Vec<u8>),
    /// Not 64-bit (EI_CLASS).
    #[error("not a 64-bit ELF (class {0})")]
    NotElf64(u8),
    /// Not little-endian (EI_DATA).
    #[error("not a little-endian ELF (data encoding {0})")]
    NotLittleEndian(u8),
    /// The section header table, or a section, lies outside the file.
    #[error("ELF {what} lies outside the file ({len} bytes)")]
    OutOfBounds { what: String, len: usize },
}

/// A parsed ELF64 little-endian header, borrowing the file.
#[derive(Debug, Clone, Copy)]
pub struct Elf<'a> {
    data: &'a [u8],
    /// `e_type`.
    pub e_type: u16,
    /// `e_machine`.
    pub machine: u16,
    shoff: usize,
    shentsize: usize,
    shnum: usize,
    shstrndx: usize,
}

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(off..off + 8)?.try_into().ok()?))
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Parses and checks the ELF header: magic, 64-bit, little-endian.
pub fn parse(data: &[u8]) -> Result<Elf<'_>, ElfError> {
    if data.len() < HEADER_LEN {
        if data.len() >= 4 && !data.starts_with(b"\x7fELF") {
            return Err(ElfError::BadMagic(data[..4].to_vec()));
        }
        return Err(ElfError::TooShort { len: data.len() });
    }
    if !data.starts_with(b"\x7fELF") {
        return Err(ElfError::BadMagic(data[..4].to_vec()));
    }
    if data[4] != 2 {
        return Err(ElfError::NotElf64(data[4]));
    }
    if data[5] != 1 {
        return Err(ElfError::NotLittleEndian(data[5]));
    }
    let field = |off| u16_at(data, off).map(usize::from).unwrap_or(0);
    let mut elf = Elf {
        data,
        e_type: u16_at(data, 16).unwrap_or(0),
        machine: u16_at(data, 18).unwrap_or(0),
        shoff: usize_of(u64_at(data, 40).unwrap_or(0)),
        shentsize: field(58),
        shnum: field(60),
        shstrndx: field(62),
    };
    // Extended numbering: section 0 holds the real count and string-table index.
    if elf.shoff != 0 && (elf.shnum == 0 || elf.shstrndx == usize::from(SHN_XINDEX)) {
        let zero = elf.section_header(0)?;
        if elf.shnum == 0 {
            elf.shnum = usize_of(u64_at(zero, 32).unwrap_or(0));
        }
        if elf.shstrndx == usize::from(SHN_XINDEX) {
            elf.shstrndx = usize_of(u64::from(u32_at(zero, 40).unwrap_or(0)));
        }
    }
    Ok(elf)
}

impl<'a> Elf<'a> {
    fn out_of_bounds(&self, what: String) -> ElfError {
        ElfError::OutOfBounds {
            what,
            len: self.data.len(),
        }
    }

    fn section_header(&self, index: usize) -> Result<&'a [u8], ElfError> {
        if self.shentsize < SECTION_HEADER_LEN {
            return Err(self.out_of_bounds(format!(
                "section header size {} (expected {SECTION_HEADER_LEN})",
                self.shentsize
            )));
        }
        index
            .checked_mul(self.shentsize)
            .and_then(|o| o.checked_add(self.shoff))
            .and_then(|start| self.data.get(start..start.checked_add(SECTION_HEADER_LEN)?))
            .ok_or_else(|| self.out_of_bounds(format!("section header {index}")))
    }

    /// The file bytes of section `index` (empty for a section without file data).
    fn section_data(&self, index: usize) -> Result<&'a [u8], ElfError> {
        let sh = self.section_header(index)?;
        if u32_at(sh, 4) == Some(SHT_NOBITS) {
            return Ok(&[]);
        }
        let offset = usize_of(u64_at(sh, 24).unwrap_or(0));
        let size = usize_of(u64_at(sh, 32).unwrap_or(0));
        offset
            .checked_add(size)
            .and_then(|end| self.data.get(offset..end))
            .ok_or_else(|| self.out_of_bounds(format!("section {index} data")))
    }

    /// The file bytes of the first section named `name`, if there is one.
    pub fn section(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        if self.shoff == 0 || self.shnum == 0 {
            return Ok(None);
        }
        let names = self.section_data(self.shstrndx)?;
        for index in 0..self.shnum {
            let sh = self.section_header(index)?;
            let name_off = usize_of(u64::from(u32_at(sh, 0).unwrap_or(0)));
            let Some(rest) = names.get(name_off..) else {
                continue;
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if &rest[..end] == name.as_bytes() {
                return self.section_data(index).map(Some);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

    use super::*;

    /// A minimal ELF64 LE file of `e_type`/`machine` with the given named sections.
    pub(crate) fn build(e_type: u16, machine: u16, sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut shstrtab = vec![0u8];
        let mut names = Vec::new();
        for (name, _) in sections.iter().chain([(".shstrtab", &[][..])].iter()) {
            names.push(u32::try_from(shstrtab.len()).unwrap());
            shstrtab.extend_from_slice(name.as_bytes());
            shstrtab.push(0);
        }
        let mut out = vec![0u8; HEADER_LEN];
        let mut placed = Vec::new();
        for (_, data) in sections.iter().copied().chain([("", &shstrtab[..])]) {
            placed.push((out.len(), data.len()));
            out.extend_from_slice(data);
        }
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len();
        out.extend_from_slice(&[0u8; SECTION_HEADER_LEN]); // section 0: null
        for (i, (off, len)) in placed.iter().enumerate() {
            let mut sh = [0u8; SECTION_HEADER_LEN];
            sh[0..4].copy_from_slice(&names[i].to_le_bytes());
            sh[4..8].copy_from_slice(&1u32.to_le_bytes()); // PROGBITS
            sh[24..32].copy_from_slice(&(*off as u64).to_le_bytes());
            sh[32..40].copy_from_slice(&(*len as u64).to_le_bytes());
            out.extend_from_slice(&sh);
        }
        let shnum = u16::try_from(placed.len() + 1).unwrap();
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&e_type.to_le_bytes());
        out[18..20].copy_from_slice(&machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&shnum.to_le_bytes());
        out[62..64].copy_from_slice(&(shnum - 1).to_le_bytes());
        out
    }

    #[test]
    fn finds_sections_by_name() {
        let elf = build(
            ET_REL,
            EM_X86_64,
            &[(".text", b"\x90\x90"), (".modinfo", b"a=b\0")],
        );
        let parsed = parse(&elf).unwrap();
        assert_eq!(parsed.e_type, ET_REL);
        assert_eq!(parsed.machine, EM_X86_64);
        assert_eq!(parsed.section(".modinfo").unwrap(), Some(&b"a=b\0"[..]));
        assert_eq!(parsed.section(".text").unwrap(), Some(&b"\x90\x90"[..]));
        assert_eq!(parsed.section(".modinf").unwrap(), None);
        assert_eq!(parsed.section(".data").unwrap(), None);
    }

    #[test]
    fn refuses_what_is_not_elf64_le() {
        assert_eq!(
            parse(b"\x7fELF").unwrap_err(),
            ElfError::TooShort { len: 4 }
        );
        assert!(matches!(parse(b"MZ\0\0\0"), Err(ElfError::BadMagic(_))));
        let mut elf = build(ET_EXEC, EM_X86_64, &[]);
        elf[4] = 1;
        assert_eq!(parse(&elf).unwrap_err(), ElfError::NotElf64(1));
        elf[4] = 2;
        elf[5] = 2;
        assert_eq!(parse(&elf).unwrap_err(), ElfError::NotLittleEndian(2));
    }

    #[test]
    fn out_of_bounds_tables_are_errors() {
        let mut elf = build(ET_REL, EM_X86_64, &[(".modinfo", b"x\0")]);
        let len = elf.len();
        // Section header table beyond the end.
        elf[40..48].copy_from_slice(&(len as u64 + 8).to_le_bytes());
        let err = parse(&elf).unwrap().section(".modinfo").unwrap_err();
        assert!(matches!(err, ElfError::OutOfBounds { .. }), "{err}");
        // A section whose data runs past the end.
        let mut elf = build(ET_REL, EM_X86_64, &[(".modinfo", b"x\0")]);
        let shoff = usize::try_from(u64_at(&elf, 40).unwrap()).unwrap();
        let sh1 = shoff + SECTION_HEADER_LEN;
        elf[sh1 + 32..sh1 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = parse(&elf).unwrap().section(".modinfo").unwrap_err();
        assert!(err.to_string().contains("section 1 data"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            shnum in 0u16..8,
        ) {
            let mut data = b"\x7fELF\x02\x01\x01".to_vec();
            data.extend_from_slice(&body);
            if data.len() >= HEADER_LEN {
                data[60..62].copy_from_slice(&shnum.to_le_bytes());
            }
            if let Ok(elf) = parse(&data) {
                let _ = elf.section(".modinfo");
            }
        }
    }
}
