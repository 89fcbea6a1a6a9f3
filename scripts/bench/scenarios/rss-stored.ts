import { num, preq, preqAll, preqFailures } from "../loadgen.js";
import { dirSize, diskMeter, fileMappings, fmtParts, type RssParts, rssParts, rssSampler, settledRss } from "../measure.js";
import { fig, fmtInt } from "../results.js";
import { serverScenario } from "../scenario.js";

export const rssStored = serverScenario({
  name: "rss-stored",
  title: "mq9-edge RSS with a large store (many mailboxes, many stored messages)",
  once: true,
  async run(ctx, s) {
    const { cfg } = ctx;
    if (s.kind !== "mq9-edge") {
      ctx.log("skipped: mq9-edge only");
      return [];
    }
    const boxes = cfg.rssMailboxes;
    const total = boxes * cfg.rssPerMailbox;
    const empty = await settledRss(s, cfg.settleMs);
    ctx.log(`empty store: ${fmtParts(empty)}`);
    const t0 = Date.now();
    const cr = await preqAll(
      s.port,
      { subject: "$mq9.AI.MAILBOX.CREATE", payload: '{"name":"bench.m%d","ttl":0}', fanout: boxes, count: boxes, window: cfg.window },
      `creating ${boxes} mailboxes`,
    );
    const afterBoxes = rssParts(s.pid);
    ctx.log(`${fmtInt(boxes)} mailboxes created in ${num(cr.elapsed_s, "elapsed_s").toFixed(2)} s (${fmtInt(num(cr.rate, "rate"))}/s): ${fmtParts(afterBoxes)}`);
    const sampler = rssSampler(s.pid, 100);
    const c0 = s.cpuSeconds();
    const disk = diskMeter(s);
    const fill = await preq(s.port, {
      subject: "$mq9.AI.MAILBOX.MSG.bench.m%d",
      fanout: boxes,
      count: total,
      window: cfg.window,
      size: cfg.size,
      maxSeconds: 1800,
    });
    const peak = sampler.stop();
    const loaded = rssParts(s.pid);
    const ioPer = disk(total);
    const f = preqFailures(fill);
    if (f.failed) ctx.warn(`rss-stored fill: ${f.failed} of ${total} sends failed: ${f.text}`);
    const fillSecs = num(fill.elapsed_s, "elapsed_s");
    ctx.log(
      `stored ${fmtInt(num(fill.ok, "ok"))} × ${cfg.size} B (${cfg.rssPerMailbox} per mailbox) in ${fillSecs.toFixed(1)} s = ${fmtInt(num(fill.rate, "rate"))} sends/s, ` +
        `broker CPU ${(((s.cpuSeconds() - c0) / fillSecs) * 100).toFixed(0)}%, disk writes ${ioPer.toFixed(1)} KiB per send (device-wide, after sync); ` +
        `peak VmRSS ${peak.toFixed(1)} MiB; right after: ${fmtParts(loaded)}`,
    );
    const settleMs = Math.max(cfg.settleMs, 5000);
    const settled = await settledRss(s, settleMs);
    const maps = fileMappings(s.pid, "/data.mdb");
    ctx.log(
      `${settleMs} ms later: ${fmtParts(settled)}; data.mdb is mapped ${maps.maps} time(s): ${maps.sizeMiB.toFixed(0)} MiB mapped, ` +
        `${maps.rssMiB.toFixed(1)} MiB of it resident`,
    );
    const du = dirSize(s.dataDir!);
    ctx.log(`data dir: ${(du.apparent / 2 ** 20).toFixed(1)} MiB apparent, ${(du.allocated / 2 ** 20).toFixed(1)} MiB allocated (${du.files.join(", ")})`);
    let restarted: RssParts | null = null;
    let restartSecs = NaN;
    if (s.restart) {
      const r0 = Date.now();
      await s.restart();
      restartSecs = (Date.now() - r0) / 1000;
      restarted = await settledRss(s, settleMs);
      ctx.log(`restarted over the filled store (stop + start to ready ${restartSecs.toFixed(2)} s); ${settleMs} ms after ready, idle: ${fmtParts(restarted)}`);
    }
    ctx.log(`whole scenario ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    const label = `${fmtInt(boxes)} mailboxes, ${fmtInt(total)} msgs`;
    const out = [
      fig("rssst.empty", `RSS, empty store (${cfg.settleMs} ms after start)`, "MiB", empty.rss, "lower", "f1"),
      fig("rssst.empty.anon", `  of which RssAnon`, "MiB", empty.anon, "lower", "f1"),
      fig("rssst.boxes", `RSS after creating ${fmtInt(boxes)} mailboxes`, "MiB", afterBoxes.rss, "lower", "f1"),
      fig("rssst.peak", `RSS peak while storing ${fmtInt(total)} × ${cfg.size} B`, "MiB", peak, "lower", "f1"),
      fig("rssst.loaded", `RSS right after storing (${label})`, "MiB", loaded.rss, "lower", "f1"),
      fig("rssst.settled", `RSS ${settleMs} ms after storing`, "MiB", settled.rss, "lower", "f1"),
      fig("rssst.settled.anon", `  of which RssAnon (heap, private)`, "MiB", settled.anon, "lower", "f1"),
      fig("rssst.settled.file", `  of which RssFile (LMDB map, binaries)`, "MiB", settled.file, "lower", "f1"),
      fig("rssst.maps", `  data.mdb mappings (resident ${maps.rssMiB.toFixed(0)} MiB of ${maps.sizeMiB.toFixed(0)} MiB mapped)`, "maps", maps.maps, "lower", "int"),
    ];
    if (restarted) {
      out.push(
        fig("rssst.restart", `RSS after a restart over the filled store, idle`, "MiB", restarted.rss, "lower", "f1"),
        fig("rssst.restart.anon", `  of which RssAnon`, "MiB", restarted.anon, "lower", "f1"),
        fig("rssst.restart.file", `  of which RssFile`, "MiB", restarted.file, "lower", "f1"),
        fig("rssst.restart.secs", `  stop + restart to ready`, "s", restartSecs, "lower", "f2"),
      );
    }
    out.push(
      fig("rssst.disk", `data dir size (apparent)`, "MiB", du.apparent / 2 ** 20, "lower", "f1"),
      fig("rssst.disk.alloc", `data dir size (allocated on disk)`, "MiB", du.allocated / 2 ** 20, "lower", "f1"),
      fig("rssst.fill.rate", `storing rate (${cfg.window} in flight, ${fmtInt(boxes)} mailboxes)`, "sends/s", num(fill.rate, "rate"), "higher", "int"),
      fig("rssst.fill.secs", `storing time`, "s", fillSecs, "lower", "f1"),
      fig("rssst.fill.io", `disk writes per send while storing (device, after sync)`, "KiB", ioPer, "lower", "f1"),
      fig("rssst.failed", `sends failed while storing`, "sends", f.failed, "lower", "int"),
    );
    return out;
  },
});
