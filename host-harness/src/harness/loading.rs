//! Loading filters: compiling modules, starting VMs and roots, configuring them as Envoy does.

use super::*;

impl Harness {
    /// Loads a filter at the end of the chain: instantiate, `on_vm_start`, `on_configure`.
    pub fn add_filter(&mut self, spec: FilterSpec) -> Result<&mut Self, HarnessError> {
        let (module, abi) = match self.modules.get(&spec.wasm) {
            Some(m) => m.clone(),
            None => {
                let bytes = std::fs::read(&spec.wasm)
                    .map_err(|e| HarnessError::Load(format!("{}: {e}", spec.wasm.display())))?;
                let module = Module::new(&self.engine, &bytes)
                    .map_err(|e| HarnessError::Load(format!("{}: {e:#}", spec.wasm.display())))?;
                let abi = check_module(&module, &self.linker, &self.engine)
                    .map_err(|e| HarnessError::Load(format!("{}: {e:#}", spec.wasm.display())))?;
                self.modules
                    .insert(spec.wasm.clone(), (module.clone(), abi));
                (module, abi)
            }
        };
        let index = self.filters.len();
        // Envoy runs plugins with the same vm_id, code and VM configuration in one VM.
        let shared = self
            .filters
            .iter()
            .find(|f| {
                f.spec.wasm == spec.wasm
                    && f.spec.vm_id == spec.vm_id
                    && f.spec.vm_configuration == spec.vm_configuration
                    // A singleton service runs on Envoy's main thread, apart
                    // from every worker's VM.
                    && f.spec.service != Some(true)
                    && spec.service != Some(true)
            })
            .map(|f| f.vm.clone());
        let vm = match shared {
            Some(vm) => vm,
            None => {
                let vm_spec = VmSpec {
                    module: &module,
                    linker: &self.linker,
                    plugin_name: spec.name.clone(),
                    root_id: spec.root_id.clone(),
                    vm_id: spec.vm_id.clone(),
                    configuration: spec.configuration.clone(),
                    vm_configuration: spec.vm_configuration.clone(),
                    env: spec.env.clone(),
                    memory_limit: self.memory_limit,
                    fuel: self.fuel,
                };
                let vm = Vm::instantiate(
                    &self.engine,
                    vm_spec,
                    abi,
                    self.world.clone(),
                    self.streams.clone(),
                    index,
                )
                .map_err(|e| HarnessError::Load(format!("{}: {e:#}", spec.wasm.display())))?;
                Rc::new(RefCell::new(vm))
            }
        };
        let handle = vm.clone();
        let mut vm = vm.borrow_mut();
        let root = vm.new_context(Ctx::Root, None);
        vm.add_plugin(
            root,
            PluginInfo {
                name: spec.name.clone(),
                root_id: spec.root_id.clone(),
                configuration: spec.configuration.clone(),
                tick_period_ms: 0,
                tick_sets: 0,
            },
        );
        if vm.store.data().root_context == 0 {
            vm.store.data_mut().root_context = root;
        }
        let (vm_size, cfg_size) = (
            spec.vm_configuration.len() as i32,
            spec.configuration.len() as i32,
        );
        let ex = vm.exports.clone();
        let fuel = self.fuel;
        let started = vm.call(root, fuel, |s| {
            if let Some(f) = &ex.on_context_create {
                f.call(&mut *s, (root as i32, 0))?;
            }
            let ok = match &ex.on_vm_start {
                Some(f) => f.call(&mut *s, (root as i32, vm_size))? != 0,
                None => true,
            };
            Ok(ok)
        });
        match started {
            Ok(true) => {}
            Ok(false) => {
                return Err(HarnessError::Rejected(format!(
                    "{}: on_vm_start returned false",
                    spec.name
                )))
            }
            Err(e) => {
                return Err(HarnessError::Rejected(format!(
                    "{}: on_vm_start: {e}",
                    spec.name
                )))
            }
        }
        let configured = vm.call(root, fuel, |s| match &ex.on_configure {
            Some(f) => Ok(f.call(&mut *s, (root as i32, cfg_size))? != 0),
            None => Ok(true),
        });
        match configured {
            Ok(true) => {}
            Ok(false) => {
                let why = self
                    .world
                    .borrow()
                    .logs
                    .iter()
                    .rev()
                    .find(|l| l.plugin == spec.name && l.level >= crate::world::LogLevel::Warn)
                    .map(|l| l.message.clone());
                return Err(HarnessError::Rejected(format!(
                    "{}: on_configure returned false{}",
                    spec.name,
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                )));
            }
            Err(e) => {
                return Err(HarnessError::Rejected(format!(
                    "{}: on_configure: {e}",
                    spec.name
                )))
            }
        }
        drop(vm);
        self.filters.push(Filter {
            spec,
            vm: handle,
            root,
            tick_period_ms: 0,
            tick_sets: 0,
            next_tick_ns: None,
        });
        self.after_callback();
        Ok(self)
    }

    /// Loads a bootstrap service (`spec` with [`FilterSpec::service`], or a
    /// singleton if not set): VM start, configure, then only its root
    /// callbacks (ticks, queues, HTTP call answers); no stream reaches it.
    pub fn add_service(&mut self, spec: FilterSpec) -> Result<&mut Self, HarnessError> {
        let singleton = spec.service.unwrap_or(true);
        self.add_filter(spec.service(singleton))
    }

    /// Ends filter `filter`'s root as Envoy does when its plugin is removed
    /// (a listener drained, a configuration replaced): `proxy_on_done`,
    /// then `proxy_on_delete`, and its tick stops. Meant for the end of a
    /// test: the filter stays in the chain, but its streams have no root.
    pub fn remove_root(&mut self, filter: usize) {
        let Some(f) = self.filters.get_mut(filter) else {
            return;
        };
        f.next_tick_ns = None;
        f.tick_period_ms = 0;
        let (root, ex) = (f.root, f.vm.borrow_mut().exports.clone());
        self.world
            .borrow_mut()
            .trace_callback(filter, root, "on_delete");
        let _ = f.vm.borrow_mut().call(root, self.fuel, |s| {
            if let Some(cb) = &ex.on_done {
                cb.call(&mut *s, root as i32)?;
            }
            if let Some(cb) = &ex.on_delete {
                cb.call(&mut *s, root as i32)?;
            }
            Ok(())
        });
        self.after_callback();
    }

    /// Adds a filter with a JSON/text configuration; shorthand for tests.
    pub fn filter(
        &mut self,
        wasm: impl AsRef<Path>,
        config: &str,
    ) -> Result<&mut Self, HarnessError> {
        self.add_filter(FilterSpec::new(wasm).config(config.as_bytes().to_vec()))
    }
}
