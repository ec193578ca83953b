fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mut db = redb::Database::create(&path).unwrap();
    let t = std::time::Instant::now();
    let r = db.compact().unwrap();
    println!("compacted {r} in {:?}, size {}", t.elapsed(), std::fs::metadata(&path).unwrap().len());
}
