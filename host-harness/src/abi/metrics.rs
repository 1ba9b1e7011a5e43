//! Metrics: counters, gauges and histograms.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, nptr: i32, nlen: i32, id_out: i32| -> i32 {
            let r = (|| {
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let kind = match kind {
                    0 => MetricKind::Counter,
                    1 => MetricKind::Gauge,
                    2 => MetricKind::Histogram,
                    _ => return Err(BAD_ARGUMENT),
                };
                let id = c.data().world.borrow_mut().define_metric(kind, &name);
                mem::write_u32(&mut c, id_out, id)
            })();
            done(&c, "proxy_define_metric", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| -> i32 {
            let r = (|| {
                let mut w = c.data().world.borrow_mut();
                let m = w.metric_mut(id as u32).ok_or(NOT_FOUND)?;
                match m.kind {
                    // Envoy: counters only go up.
                    MetricKind::Counter if offset > 0 => m.value += offset,
                    MetricKind::Counter => return Err(BAD_ARGUMENT),
                    MetricKind::Gauge => m.value += offset,
                    MetricKind::Histogram => return Err(BAD_ARGUMENT),
                }
                Ok(())
            })();
            done(&c, "proxy_increment_metric", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> i32 {
            let r = (|| {
                let mut w = c.data().world.borrow_mut();
                let m = w.metric_mut(id as u32).ok_or(NOT_FOUND)?;
                match m.kind {
                    MetricKind::Counter => m.value += value,
                    MetricKind::Gauge => m.value = value,
                    MetricKind::Histogram => m.samples.push(value as u64),
                }
                Ok(())
            })();
            done(&c, "proxy_record_metric", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, out: i32| -> i32 {
            let r = (|| {
                let value = {
                    let mut w = c.data().world.borrow_mut();
                    let m = w.metric_mut(id as u32).ok_or(NOT_FOUND)?;
                    if m.kind == MetricKind::Histogram {
                        return Err(BAD_ARGUMENT);
                    }
                    m.value as u64
                };
                mem::write(&mut c, out, &value.to_le_bytes())
            })();
            done(&c, "proxy_get_metric", r)
        },
    )?;
    Ok(())
}
