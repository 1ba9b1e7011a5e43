//! The effective context, `proxy_done` and foreign functions.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, context: i32| -> i32 {
            let h = c.data_mut();
            let r = if h.contexts.contains_key(&(context as u32)) {
                h.effective_context = Some(context as u32);
                Ok(())
            } else {
                Err(BAD_ARGUMENT)
            };
            done(&c, "proxy_set_effective_context", r)
        },
    )?;
    linker.func_wrap("env", "proxy_done", |c: C<'_>| -> i32 {
        done(&c, "proxy_done", Ok(()))
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>,
         nptr: i32,
         nlen: i32,
         aptr: i32,
         alen: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let call = (|| {
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let args = mem::read(&mut c, aptr, alen)?;
                let f = crate::foreign::lookup(&name).ok_or(NOT_FOUND)?;
                f(c.data_mut(), &args)
            })();
            let r = match call {
                Ok(out) => mem::give(&mut c, &out, ptr_out, size_out)?,
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_call_foreign_function", r))
        },
    )?;
    Ok(())
}
