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

/// One file of [`tree`]: an absolute path in the container, its content, mode and owner.
pub struct TreeFile<'a> {
    /// Absolute path in the container.
    pub path: &'a str,
    /// Content.
    pub content: &'a [u8],
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// An archive of regular files at absolute paths, to be extracted at `/`. It has no directory
/// entries: the engine makes a missing parent directory (root-owned, 0755) and leaves an
/// existing one as it is, where a directory entry would reset its mode and owner.
pub fn tree(files: &[TreeFile<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.content.len() as u64);
        header.set_mode(f.mode);
        header.set_uid(u64::from(f.uid));
        header.set_gid(u64::from(f.gid));
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, f.path.trim_start_matches('/'), f.content)
            .expect("writing a tar archive to memory cannot fail");
    }
    builder
        .into_inner()
        .expect("writing a tar archive to memory cannot fail")
}

/// One regular file of an archive: path, mode, owner, group, content.
pub type Entry = (String, u32, u64, u64, Vec<u8>);

/// Mode, owner and content of every regular file of `archive`, by path (tests and checks).
///
/// # Errors
/// The bytes are not a tar archive.
pub fn entries(archive: &[u8]) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(archive).entries()? {
        let mut entry = entry?;
        let h = entry.header().clone();
        if h.entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        out.push((path, h.mode()?, h.uid()?, h.gid()?, content));
    }
    Ok(out)
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

    #[test]
    fn a_tree_holds_files_at_relative_paths_with_mode_and_owner_and_no_directories() {
        let a = tree(&[
            TreeFile {
                path: "/run/secrets/db",
                content: b"pw",
                mode: 0o400,
                uid: 70,
                gid: 71,
            },
            TreeFile {
                path: "/etc/nginx/nginx.conf",
                content: b"events {}",
                mode: 0o444,
                uid: 0,
                gid: 0,
            },
        ]);
        assert_eq!(
            entries(&a).unwrap(),
            vec![
                ("run/secrets/db".to_string(), 0o400, 70, 71, b"pw".to_vec()),
                (
                    "etc/nginx/nginx.conf".to_string(),
                    0o444,
                    0,
                    0,
                    b"events {}".to_vec()
                ),
            ]
        );
        let kinds: Vec<_> = tar::Archive::new(&a[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().entry_type())
            .collect();
        assert!(
            kinds.iter().all(|k| *k == tar::EntryType::Regular),
            "{kinds:?}"
        );
    }
}
