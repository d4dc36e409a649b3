//! Tar archives as the engine's archive API takes and gives them (`PUT`/`GET
//! /containers/{id}/archive`): small files written into a container without anything on the
//! node's disk, and read back. Pure: bytes in, bytes out.

use std::io::Read;

/// An archive of one regular file `name` (no directories) holding `content`, with `mode`.
pub fn one_file(name: &str, content: &[u8], mode: u32) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, name, content)
        .and_then(|()| builder.into_inner())
        .expect("writing a tar archive to memory cannot fail")
}

/// An archive with nothing in it (the root file system of an empty image).
pub fn empty() -> Vec<u8> {
    tar::Builder::new(Vec::new())
        .into_inner()
        .expect("writing a tar archive to memory cannot fail")
}

/// Every regular file of `archive` as (path, content), in archive order.
///
/// # Errors
/// The bytes are not a tar archive.
pub fn files(archive: &[u8]) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(archive).entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        out.push((path, content));
    }
    Ok(out)
}

/// The content of the first regular file of `archive` (what `GET archive` of a file gives).
///
/// # Errors
/// Not a tar archive, or no regular file in it.
pub fn first_file(archive: &[u8]) -> std::io::Result<Vec<u8>> {
    files(archive)?
        .into_iter()
        .next()
        .map(|(_, c)| c)
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no file in the archive")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_is_read_back_with_its_name() {
        let a = one_file("lease", b"{\"expires_ms\":5}", 0o600);
        assert_eq!(a.len() % 512, 0);
        assert_eq!(
            files(&a).unwrap(),
            vec![("lease".to_string(), b"{\"expires_ms\":5}".to_vec())]
        );
        assert_eq!(first_file(&a).unwrap(), b"{\"expires_ms\":5}");
        assert!(first_file(&empty()).is_err());
    }
}
