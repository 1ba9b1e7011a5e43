//! Shared queues.

use super::*;

pub(super) fn register(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, nptr: i32, nlen: i32, id_out: i32| -> i32 {
            let r = (|| {
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let h = c.data();
                let owner = (h.vm_index, h.root_context);
                let id = {
                    let mut w = h.world.borrow_mut();
                    match w
                        .queues
                        .iter()
                        .position(|q| q.vm_id == h.vm_id && q.name == name)
                    {
                        Some(i) => {
                            w.queues[i].owner = owner;
                            i
                        }
                        None => {
                            w.queues.push(crate::world::Queue {
                                vm_id: h.vm_id.clone(),
                                name,
                                owner,
                                items: Default::default(),
                            });
                            w.queues.len() - 1
                        }
                    }
                };
                mem::write_u32(&mut c, id_out, id as u32 + 1)
            })();
            done(&c, "proxy_register_shared_queue", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vptr: i32, vlen: i32, nptr: i32, nlen: i32, id_out: i32| -> i32 {
            let r = (|| {
                let vm_id = mem::read_str(&mut c, vptr, vlen)?;
                let name = mem::read_str(&mut c, nptr, nlen)?;
                let id = {
                    let w = c.data().world.borrow();
                    w.queues
                        .iter()
                        .position(|q| q.vm_id == vm_id && q.name == name)
                        .ok_or(NOT_FOUND)?
                };
                mem::write_u32(&mut c, id_out, id as u32 + 1)
            })();
            done(&c, "proxy_resolve_shared_queue", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: C<'_>, id: i32, ptr: i32, len: i32| -> i32 {
            let r = (|| {
                let data = mem::read(&mut c, ptr, len)?;
                let mut w = c.data().world.borrow_mut();
                let q = w
                    .queues
                    .get_mut((id as u32 as usize).wrapping_sub(1))
                    .ok_or(NOT_FOUND)?;
                q.items.push_back(data);
                // Envoy posts the notification to the owner's dispatcher: it arrives later, not inside this call.
                w.queue_notifications.push_back(id as u32);
                Ok(())
            })();
            done(&c, "proxy_enqueue_shared_queue", r)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ptr_out: i32, size_out: i32| -> Result<i32> {
            let item = {
                let mut w = c.data().world.borrow_mut();
                match w.queues.get_mut((id as u32 as usize).wrapping_sub(1)) {
                    None => Err(NOT_FOUND),
                    Some(q) => q.items.pop_front().ok_or(EMPTY),
                }
            };
            let r = match item {
                Ok(data) => mem::give(&mut c, &data, ptr_out, size_out)?,
                Err(s) => Err(s),
            };
            Ok(done(&c, "proxy_dequeue_shared_queue", r))
        },
    )?;
    Ok(())
}
