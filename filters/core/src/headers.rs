//! The one view of a request the core needs: header values by lower-case name.

/// Read access to a request's headers (pseudo-headers such as `:path`
/// included). Values are bytes: header values are not guaranteed UTF-8.
pub trait RequestHeaders {
    /// The first value of `name` (lower-case), or `None` when absent.
    fn header(&self, name: &str) -> Option<&[u8]>;

    /// Every value of `name`, in order. Envoy hands a filter only the first
    /// value of a repeated header while the upstream receives them all, so a
    /// check on credentials must see the others too.
    fn each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        if let Some(v) = self.header(name) {
            f(v);
        }
    }

    /// The `:path` before any `?`: what path matches compare. A host view
    /// may keep it from when it read the map (every policy matches paths).
    fn path(&self) -> Option<&[u8]> {
        self.header(":path").map(crate::matcher::path_without_query)
    }

    /// Claims of the credential an earlier filter verified, if any
    /// (see [`crate::claims::CLAIMS_PROPERTY`]).
    fn claims(&self) -> Option<&serde_json::Value> {
        None
    }
}

/// An owned list of headers, for tests and hosts that already hold the map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, Vec<u8>)>);

impl HeaderList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from `(name, value)` pairs; names are lower-cased.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
}

impl RequestHeaders for HeaderList {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    fn each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .for_each(|(_, v)| f(v));
    }
}

/// A request's headers with the claims an earlier filter verified: what
/// every policy's `match` reads, so a `claims` condition means the same in
/// each of them.
pub struct WithClaims<'h, H: ?Sized> {
    pub headers: &'h H,
    pub claims: Option<serde_json::Value>,
}

impl<H: RequestHeaders + ?Sized> RequestHeaders for WithClaims<'_, H> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.header(name)
    }

    fn each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        self.headers.each_value(name, f);
    }

    fn path(&self) -> Option<&[u8]> {
        self.headers.path()
    }

    fn claims(&self) -> Option<&serde_json::Value> {
        self.claims.as_ref()
    }
}
