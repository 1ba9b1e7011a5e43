//! Shared data: the key-value store every VM of an Envoy sees.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>,
         kptr: i32,
         klen: i32,
         ptr_out: i32,
         size_out: i32,
         cas_out: i32|
         -> Result<i32> {
            let key = match mem::read_str(&mut c, kptr, klen) {
                Ok(k) => k,
                Err(s) => return Ok(done(&c, "proxy_get_shared_data", Err(s))),
            };
            let entry = {
                let h = c.data();
                let w = h.world.borrow();
                w.shared_data.get(&(h.vm_id.clone(), key)).cloned()
            };
            let r = match entry {
                None => Err(NOT_FOUND),
                Some((value, cas)) => match mem::give(&mut c, &value, ptr_out, size_out)? {
                    Ok(()) => mem::write_u32(&mut c, cas_out, cas),
                    e => e,
                },
            };
            Ok(done(&c, "proxy_get_shared_data", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kptr: i32, klen: i32, vptr: i32, vlen: i32, cas: i32| -> i32 {
            let r = (|| {
                let key = mem::read_str(&mut c, kptr, klen)?;
                let value = mem::read(&mut c, vptr, vlen)?;
                let h = c.data();
                let mut w = h.world.borrow_mut();
                let slot = w
                    .shared_data
                    .entry((h.vm_id.clone(), key))
                    .or_insert((Vec::new(), 0));
                // Envoy: cas 0 always writes; otherwise it must match the current one.
                if cas != 0 && cas as u32 != slot.1 {
                    return Err(CAS_MISMATCH);
                }
                slot.0 = value;
                slot.1 = slot.1.wrapping_add(1).max(1);
                Ok(())
            })();
            done(&c, "proxy_set_shared_data", r)
        },
    )?;
    Ok(())
}
