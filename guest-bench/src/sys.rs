//! System counters and the few raw syscalls (mount, pread). Native AIO is
//! the shared `bufaio-aio-sys` crate's. All `unsafe` of the crate lives
//! here, in the native AIO engine's submit and in the io_uring engine.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// Process-wide resource usage (all threads, including exited ones).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_ns: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
}

pub fn usage() -> Usage {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Usage {
        cpu_ns: tv(ru.ru_utime) + tv(ru.ru_stime),
        nvcsw: ru.ru_nvcsw as u64,
        nivcsw: ru.ru_nivcsw as u64,
    }
}

/// The `ctxt` line of /proc/stat: context switches of the whole system.
pub fn parse_ctxt(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .and_then(|v| v.trim().parse().ok())
}

pub fn system_ctxt() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_ctxt(&s))
        .unwrap_or(0)
}

/// Read and write IOs completed and sectors read / written, from
/// /sys/block/DEV/stat (fields 1, 3, 5 and 7).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DevStat {
    pub reads: u64,
    pub sectors: u64,
    pub writes: u64,
    pub wsectors: u64,
}

pub fn parse_devstat(s: &str) -> Option<DevStat> {
    let f: Vec<u64> = s
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    Some(DevStat {
        reads: *f.first()?,
        sectors: *f.get(2)?,
        writes: *f.get(4)?,
        wsectors: *f.get(6)?,
    })
}

pub fn devstat(dev: &str) -> DevStat {
    std::fs::read_to_string(format!("/sys/block/{dev}/stat"))
        .ok()
        .and_then(|s| parse_devstat(&s))
        .unwrap_or_default()
}

/// sync + drop page cache, dentries and inodes (mapping metadata too).
pub fn drop_caches() -> io::Result<()> {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

pub fn mount(src: &str, dst: &Path, fstype: &str) -> io::Result<()> {
    let s = cstr(src)?;
    let d = cstr(&dst.to_string_lossy())?;
    let t = cstr(fstype)?;
    // SAFETY: valid NUL-terminated strings outliving the call; NULL data.
    let r = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn umount(dst: &Path) -> io::Result<()> {
    let d = cstr(&dst.to_string_lossy())?;
    // SAFETY: valid NUL-terminated string.
    if unsafe { libc::umount2(d.as_ptr(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Filesystem block size (statfs f_bsize).
pub fn block_size(p: &Path) -> u64 {
    let Ok(c) = cstr(&p.to_string_lossy()) else {
        return 0;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } < 0 {
        return 0;
    }
    st.f_bsize as u64
}

/// `pread` into `buf`; returns bytes read.
pub fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes for the duration of the call.
    let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// `pwrite` from `buf`; returns bytes written.
pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes for the duration of the call.
    let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off as libc::off_t) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_and_sys_parsers() {
        let stat = "cpu  1 2 3\nintr 5 6\nctxt 123456\nbtime 1\n";
        assert_eq!(parse_ctxt(stat), Some(123456));
        assert_eq!(parse_ctxt("cpu 1\n"), None);
        let d = "    2001        0    16008     2345        5        0       40        1        0     2500     2346        0        0        0        0        0        0\n";
        assert_eq!(
            parse_devstat(d),
            Some(DevStat {
                reads: 2001,
                sectors: 16008,
                writes: 5,
                wsectors: 40,
            })
        );
        assert_eq!(parse_devstat("x y"), None);
        assert_eq!(parse_devstat("1 2 3 4"), None, "no write fields");
    }
}
