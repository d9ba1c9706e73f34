use std::time::Duration;

#[test]
fn smoke() {
    for n in [1usize, 2, 4] {
        let rt = shard::Builder::new().shards(n).pin(false).build().expect("plan");
        let out = rt
            .run(move || async move {
                shard::time::sleep(Duration::from_millis(5)).await;
                let ids = shard::map_reduce(|| async { shard::shard_id() }, 0, |a, b| a + b).await;
                let st = shard::stats();
                (ids, st.uring_setup)
            })
            .expect("run");
        println!("{n}: {out:?}");
        assert_eq!(out.0, Ok((0..n).sum()));
    }
}
