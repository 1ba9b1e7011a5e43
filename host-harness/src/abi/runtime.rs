//! Logging, the log level, the clock and the tick period.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, size: i32| -> i32 {
            let r = (|| {
                let msg = String::from_utf8_lossy(&mem::read(&mut c, ptr, size)?).into_owned();
                let level = LogLevel::from_abi(level).ok_or(BAD_ARGUMENT)?;
                log(c.data_mut(), level, msg);
                Ok(())
            })();
            done(&c, "proxy_log", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, out: i32| -> i32 {
            let r = mem::write_u32(&mut c, out, LogLevel::Trace as u32);
            done(&c, "proxy_get_log_level", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, out: i32| -> i32 {
            let now = c.data().world.borrow().now_ns;
            let r = mem::write(&mut c, out, &now.to_le_bytes());
            done(&c, "proxy_get_current_time_nanoseconds", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> i32 {
            c.data_mut().tick_period_ms = period as u32 as u64;
            c.data_mut().tick_sets += 1;
            done(&c, "proxy_set_tick_period_milliseconds", Ok(()))
        },
    )?;
    Ok(())
}

/// Records a log line; a critical one is kept as the likely panic message.
pub(crate) fn log(h: &mut Host, level: LogLevel, message: String) {
    if level == LogLevel::Critical {
        h.last_critical = Some(message.clone());
    }
    let plugin = h.plugin_name.clone();
    h.world.borrow_mut().logs.push(crate::model::LogEntry {
        level,
        message,
        plugin,
    });
}
