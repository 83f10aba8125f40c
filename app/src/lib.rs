//! The Leptos web app lands with the web-app issue; this crate only reserves its place.
