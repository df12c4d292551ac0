//! How a test sends an access token: `authorization: Bearer <token>`, on
//! every call of a client ([`Bearer`] as its interceptor) or on one request
//! ([`authorized`]). Tests of malformed metadata send exactly the values
//! they name ([`Bearer::values`]). [`from_address`] sends a call as if
//! from a client address, through a trusted proxy's `x-forwarded-for`.

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
};

/// Adds `authorization` entries to every call.
#[derive(Clone)]
pub struct Bearer(Vec<MetadataValue<Ascii>>);

impl Bearer {
    /// `authorization: Bearer <token>`.
    pub fn new(token: &str) -> Self {
        Self(vec![
            format!("Bearer {token}").parse().expect("a token is ASCII"),
        ])
    }

    /// Exactly these `authorization` values, none for an empty slice.
    pub fn values(values: &[&str]) -> Self {
        Self(
            values
                .iter()
                .map(|value| value.parse().expect("ASCII metadata"))
                .collect(),
        )
    }

    fn add_to<T>(&self, request: &mut Request<T>) {
        for value in &self.0 {
            request
                .metadata_mut()
                .append("authorization", value.clone());
        }
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.add_to(&mut request);
        Ok(request)
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    Bearer::new(token).add_to(&mut request);
    request
}

/// `message` as if from the client `address`: its `x-forwarded-for`, which
/// a server configured to trust the test's loopback peer as a proxy believes.
pub fn from_address<T>(message: T, address: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "x-forwarded-for",
        address.parse().expect("an ASCII address"),
    );
    request
}
