//! Header and trailer maps, of the stream and of call answers.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let bytes = with_map(c.data(), map, |m| m.serialize());
            let r = match bytes {
                Ok(b) => mem::give(&mut c, &b, ptr_out, size_out)?,
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_get_header_map_pairs", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> i32 {
            let r = (|| {
                let bytes = mem::read(&mut c, ptr, len)?;
                let new = Headers::deserialize(&bytes).ok_or(SERIALIZATION_FAILURE)?;
                with_map(c.data(), map, |m| {
                    // Envoy's setHeaderMapPairs adds each pair to the existing map.
                    for (k, v) in new.0 {
                        m.add(&k.to_ascii_lowercase(), &v);
                    }
                })
            })();
            done(&c, "proxy_set_header_map_pairs", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         map: i32,
         kptr: i32,
         klen: i32,
         ptr_out: i32,
         size_out: i32|
         -> Result<i32> {
            let key = match mem::read(&mut c, kptr, klen) {
                Ok(k) => String::from_utf8_lossy(&k).to_ascii_lowercase(),
                Err(s) => return Ok(done(&c, "proxy_get_header_map_value", Err(s))),
            };
            let value = with_map(c.data(), map, |m| m.get(&key).map(<[u8]>::to_vec));
            let r = match value {
                Ok(Some(v)) => mem::give(&mut c, &v, ptr_out, size_out)?,
                Ok(None) => Err(NOT_FOUND),
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_get_header_map_value", r))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> i32 {
            let r = (|| {
                let key =
                    String::from_utf8_lossy(&mem::read(&mut c, kptr, klen)?).to_ascii_lowercase();
                let value = mem::read(&mut c, vptr, vlen)?;
                with_map(c.data(), map, |m| m.replace(&key, &value))
            })();
            done(&c, "proxy_replace_header_map_value", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> i32 {
            let r = (|| {
                let key =
                    String::from_utf8_lossy(&mem::read(&mut c, kptr, klen)?).to_ascii_lowercase();
                let value = mem::read(&mut c, vptr, vlen)?;
                with_map(c.data(), map, |m| m.add(&key, &value))
            })();
            done(&c, "proxy_add_header_map_value", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32| -> i32 {
            let r = (|| {
                let key =
                    String::from_utf8_lossy(&mem::read(&mut c, kptr, klen)?).to_ascii_lowercase();
                with_map(c.data(), map, |m| m.remove(&key))
            })();
            done(&c, "proxy_remove_header_map_value", r)
        },
    )?;
    Ok(())
}
