//! Files the manager keeps in its working directory: markers, CSVs,
//! `metrics.prom`, `report.html`, the CLI jar, java's trust store.
//!
//! That directory is the Jenkins job's workspace, which others may write to
//! (Job/Workspace, any build that runs there). A symbolic link planted at one
//! of these names must not make the manager write through it into a file
//! elsewhere that the Jenkins user may write. So a file is never opened by
//! its name to be written: a new file is created beside it under a random
//! name (`O_CREAT | O_EXCL`, which refuses to follow a link), written, then
//! renamed over the name — `rename` replaces a link, never its target. A
//! reader also never sees half a file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces whatever is at `path` (a file, a link, nothing) by a new file
/// holding `contents`.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file name", path.display())));
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    // A planted name can at worst collide once with a random one.
    for _ in 0..8 {
        let tmp = dir.join(format!(".{}.{:016x}.new", name.to_string_lossy(), fastrand::u64(..)));
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let written = file.write_all(contents).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return written;
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}: no free scratch name beside it", path.display())))
}

/// Opens `path` for reading only if it is a regular file, not through a
/// link (`O_NOFOLLOW`) and without blocking on a FIFO (`O_NONBLOCK`), and
/// reads at most `limit` bytes of it.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a regular file", path.display())));
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens (creating it if need be) the file at `path` for writing without
/// truncating it, refusing a link there (`O_NOFOLLOW`) and anything but a
/// regular file: for a lock file. `O_NONBLOCK`, or a FIFO planted there
/// would hang the run in `open` before any timeout runs.
pub fn open_lock(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a regular file", path.display())));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fifo_planted_at_the_lock_file_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slave_manager.lock");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK this open would wait for a reader forever.
        assert!(super::open_lock(&path).is_err());
        let regular = dir.path().join("ok.lock");
        assert!(super::open_lock(&regular).is_ok());
    }

    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_link_is_replaced_and_its_target_left_alone() {
        let work = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, "precious").unwrap();
        let at = work.path().join("properties_run.csv");
        symlink(&target, &at).unwrap();
        replace(&at, b"a,b\r\n1,2\r\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&at).unwrap().file_type().is_file());
        assert_eq!(std::fs::read_to_string(&at).unwrap(), "a,b\r\n1,2\r\n");
        // A dangling link is no different, and nothing is left beside.
        let dangling = work.path().join("report.html");
        symlink(outside.path().join("absent"), &dangling).unwrap();
        replace(&dangling, b"x").unwrap();
        assert!(!outside.path().join("absent").exists());
        let names: Vec<String> =
            std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn reads_refuse_links_and_fifos_and_are_bounded() {
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("dev__i-1.start_instance");
        std::fs::write(&file, "labels=dev\n").unwrap();
        assert_eq!(read_regular(&file, 4).unwrap(), b"labe");
        let link = work.path().join("dev__i-2.start_instance");
        symlink(&file, &link).unwrap();
        assert!(read_regular(&link, 100).is_err());
        let fifo = work.path().join("dev__i-3.start_instance");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(read_regular(&fifo, 100).is_err(), "no writer, no wait");
        let lock = work.path().join("slave_manager.lock");
        symlink(work.path().join("elsewhere"), &lock).unwrap();
        assert!(open_lock(&lock).is_err());
        assert!(!work.path().join("elsewhere").exists());
    }
}
