//! Rebuilds when a file under migrations/ changes: `sqlx::migrate!` embeds them at compile time,
//! and cargo does not otherwise notice a new or edited `.sql` file.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
