//! `--pid-file`: the master's pid, written without following links. The
//! master may be root and the file's directory writable by others; a link
//! planted at the path must not make root truncate whatever it points at,
//! so a link, or anything but a plain file with one name, is refused. At
//! exit the file is removed only if it is still the one written.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The pid file as written, to remove it at exit.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    content: String,
}

impl PidFile {
    /// Writes `pid` to `path`.
    pub fn write(path: &Path, pid: u32) -> io::Result<PidFile> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| no_follow_error(path, e))?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file; refusing to write to it",
                path.display()
            )));
        }
        if meta.nlink() > 1 {
            return Err(io::Error::other(format!(
                "{} has other hard links; refusing to write to it",
                path.display()
            )));
        }
        let content = format!("{pid}\n");
        file.set_len(0)?;
        file.write_all(content.as_bytes())?;
        Ok(PidFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            content,
        })
    }

    /// Removes the file, if the path still names the one written (same
    /// file, same content: an inode number alone may have been reused).
    pub fn remove(self) {
        let same = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_file() && m.dev() == self.dev && m.ino() == self.ino)
            && std::fs::read_to_string(&self.path).is_ok_and(|c| c == self.content);
        if same {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// ELOOP from O_NOFOLLOW, said plainly.
pub fn no_follow_error(path: &Path, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::other(format!(
            "{} is a symbolic link; refusing to follow it",
            path.display()
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_written_and_the_file_removed_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pid");
        std::fs::write(&path, "stale and longer\n").unwrap();
        let pid = PidFile::write(&path, 1234).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1234\n");
        pid.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        std::fs::write(&canary, "precious\n").unwrap();
        let path = dir.path().join("m.pid");
        std::os::unix::fs::symlink(&canary, &path).unwrap();
        let err = PidFile::write(&path, 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("is a symbolic link; refusing to follow it"),
            "{err}"
        );
        let hard = dir.path().join("hard.pid");
        std::fs::hard_link(&canary, &hard).unwrap();
        let err = PidFile::write(&hard, 1).unwrap_err();
        assert!(err.to_string().contains("has other hard links"), "{err}");
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "precious\n");
    }

    #[test]
    fn a_file_put_in_its_place_is_not_removed_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pid");
        let pid = PidFile::write(&path, 1).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's\n").unwrap();
        pid.remove();
        assert!(path.exists());
    }
}
