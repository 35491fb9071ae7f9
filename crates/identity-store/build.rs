//! `sqlx::migrate!` embeds the migration folders; without this, a new file there would not
//! rebuild the crate on a stable compiler.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
