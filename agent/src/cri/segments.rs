//! Virtual address to file offset translation through an ELF file's `PT_LOAD` segments, the
//! offsets that the kernel's uprobes are attached at.

use object::read::elf::{FileHeader, ProgramHeader};

/// One file-backed loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LoadSegment {
    vaddr: u64,
    offset: u64,
    /// Bytes present in the file (the rest of the memory image, like `.bss`, is not).
    filesz: u64,
}

/// The `PT_LOAD` segments of one ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadSegments {
    segments: Vec<LoadSegment>,
}

impl LoadSegments {
    /// Reads the program headers of a parsed ELF file.
    pub fn from_elf<'data, Elf: FileHeader, R: object::ReadRef<'data>>(
        header: &Elf,
        endian: Elf::Endian,
        data: R,
    ) -> Result<Self, object::Error> {
        let mut segments = Vec::new();
        for phdr in header.program_headers(endian, data)? {
            if phdr.p_type(endian) != object::elf::PT_LOAD {
                continue;
            }
            let filesz: u64 = phdr.p_filesz(endian).into();
            if filesz == 0 {
                continue;
            }
            segments.push(LoadSegment {
                vaddr: phdr.p_vaddr(endian).into(),
                offset: phdr.p_offset(endian).into(),
                filesz,
            });
        }
        Ok(Self { segments })
    }

    /// The file offset of a virtual address, if a segment maps it from the file.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        self.segments.iter().find_map(|seg| {
            let delta = address.checked_sub(seg.vaddr)?;
            (delta < seg.filesz).then(|| seg.offset + delta)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments() -> LoadSegments {
        LoadSegments {
            segments: vec![
                LoadSegment {
                    vaddr: 0x40_0000,
                    offset: 0,
                    filesz: 0x1000,
                },
                LoadSegment {
                    vaddr: 0xc5_f000,
                    offset: 0x85_f000,
                    filesz: 0x2000,
                },
            ],
        }
    }

    #[test]
    fn translates_through_the_containing_segment() {
        let segs = segments();
        assert_eq!(segs.file_offset(0x40_0010), Some(0x10));
        assert_eq!(segs.file_offset(0xc5_f380), Some(0x85_f380));
        assert_eq!(segs.file_offset(0xc6_1000), None, "past filesz");
        assert_eq!(segs.file_offset(0x10), None);
    }
}
