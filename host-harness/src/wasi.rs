//! The WASI preview1 functions a Proxy-Wasm filter needs, as Envoy provides
//! them: stdout/stderr go to the log (info/error), clocks read the harness's
//! virtual clock, `random_get` is seeded per harness, `environ` comes from
//! `vm_config.environment_variables`, and `proc_exit` ends the VM.

use crate::abi::log;
use crate::log_level::LogLevel;
use crate::vm::{mem, Host};
use wasmtime::{bail, Result};
use wasmtime::{Caller, Linker};

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;

type C<'a> = Caller<'a, Host>;

pub fn register(linker: &mut Linker<Host>) -> Result<()> {
    const W: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        W,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return EBADF;
            }
            let mut text = Vec::new();
            for i in 0..iovs_len {
                let Ok(iov) = mem::read(&mut c, iovs + i * 8, 8) else {
                    return EFAULT;
                };
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                match mem::read(&mut c, ptr, len) {
                    Ok(b) => text.extend(b),
                    Err(_) => return EFAULT,
                }
            }
            let written = text.len() as u32;
            let level = if fd == 1 {
                LogLevel::Info
            } else {
                LogLevel::Error
            };
            let message = String::from_utf8_lossy(&text)
                .trim_end_matches('\n')
                .to_owned();
            if !message.is_empty() {
                log(c.data_mut(), level, message);
            }
            match mem::write_u32(&mut c, nwritten, written) {
                Ok(()) => ESUCCESS,
                Err(_) => EFAULT,
            }
        },
    )?;
    linker.func_wrap(
        W,
        "fd_read",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32| -> i32 { EBADF },
    )?;
    linker.func_wrap(W, "fd_close", |_: C<'_>, _: i32| -> i32 { EBADF })?;
    linker.func_wrap(
        W,
        "fd_seek",
        |_: C<'_>, _: i32, _: i64, _: i32, _: i32| -> i32 { EBADF },
    )?;
    linker.func_wrap(W, "fd_fdstat_get", |_: C<'_>, _: i32, _: i32| -> i32 {
        EBADF
    })?;
    linker.func_wrap(W, "fd_prestat_get", |_: C<'_>, _: i32, _: i32| -> i32 {
        EBADF
    })?;
    linker.func_wrap(
        W,
        "fd_prestat_dir_name",
        |_: C<'_>, _: i32, _: i32, _: i32| -> i32 { EBADF },
    )?;
    linker.func_wrap(W, "sched_yield", |_: C<'_>| -> i32 { ESUCCESS })?;
    linker.func_wrap(
        W,
        "clock_time_get",
        |mut c: C<'_>, clock: i32, _precision: i64, out: i32| -> i32 {
            // Realtime and monotonic both read the virtual clock: timers stay deterministic.
            if !(0..=3).contains(&clock) {
                return EINVAL;
            }
            let now = c.data().world.borrow().now_ns;
            match mem::write(&mut c, out, &now.to_le_bytes()) {
                Ok(()) => ESUCCESS,
                Err(_) => EFAULT,
            }
        },
    )?;
    linker.func_wrap(
        W,
        "clock_res_get",
        |mut c: C<'_>, _clock: i32, out: i32| -> i32 {
            match mem::write(&mut c, out, &1u64.to_le_bytes()) {
                Ok(()) => ESUCCESS,
                Err(_) => EFAULT,
            }
        },
    )?;
    linker.func_wrap(W, "random_get", |mut c: C<'_>, ptr: i32, len: i32| -> i32 {
        let mut buf = vec![0u8; len as u32 as usize];
        c.data().world.borrow_mut().fill_random(&mut buf);
        match mem::write(&mut c, ptr, &buf) {
            Ok(()) => ESUCCESS,
            Err(_) => EFAULT,
        }
    })?;
    linker.func_wrap(
        W,
        "environ_sizes_get",
        |mut c: C<'_>, count_out: i32, size_out: i32| -> i32 {
            let env = &c.data().env;
            let count = env.len() as u32;
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            match mem::write_u32(&mut c, count_out, count)
                .and_then(|()| mem::write_u32(&mut c, size_out, size as u32))
            {
                Ok(()) => ESUCCESS,
                Err(_) => EFAULT,
            }
        },
    )?;
    linker.func_wrap(
        W,
        "environ_get",
        |mut c: C<'_>, ptrs: i32, buf: i32| -> i32 {
            let env = c.data().env.clone();
            let mut at = buf;
            for (i, (k, v)) in env.iter().enumerate() {
                let entry = format!("{k}={v}\0");
                if mem::write_u32(&mut c, ptrs + 4 * i as i32, at as u32).is_err()
                    || mem::write(&mut c, at, entry.as_bytes()).is_err()
                {
                    return EFAULT;
                }
                at += entry.len() as i32;
            }
            ESUCCESS
        },
    )?;
    linker.func_wrap(
        W,
        "args_sizes_get",
        |mut c: C<'_>, count_out: i32, size_out: i32| -> i32 {
            match mem::write_u32(&mut c, count_out, 0)
                .and_then(|()| mem::write_u32(&mut c, size_out, 0))
            {
                Ok(()) => ESUCCESS,
                Err(_) => EFAULT,
            }
        },
    )?;
    linker.func_wrap(W, "args_get", |_: C<'_>, _: i32, _: i32| -> i32 {
        ESUCCESS
    })?;
    linker.func_wrap(W, "proc_exit", |mut c: C<'_>, code: i32| -> Result<()> {
        c.data_mut().exit_code = Some(code);
        bail!("proc_exit({code})")
    })?;
    Ok(())
}
