//! Properties (`proxy_get_property`, `proxy_set_property`).

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pptr: i32, plen: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let path = match mem::read(&mut c, pptr, plen) {
                Ok(p) => p,
                Err(s) => return Ok(done(&c, "proxy_get_property", Err(s))),
            };
            let r = match crate::properties::get(c.data(), &path) {
                Some(v) => mem::give(&mut c, &v, ptr_out, size_out)?,
                None => Err(NOT_FOUND),
            };
            Ok(done(&c, "proxy_get_property", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, pptr: i32, plen: i32, vptr: i32, vlen: i32| -> i32 {
            let r = (|| {
                let path = mem::read(&mut c, pptr, plen)?;
                let value = mem::read(&mut c, vptr, vlen)?;
                crate::properties::set(c.data_mut(), &path, value)
            })();
            done(&c, "proxy_set_property", r)
        },
    )?;
    Ok(())
}
