/** The scenarios, in run order (and the order --help lists them). */
import type { Scenario } from "../scenario.js";
import { ceiling } from "./ceiling.js";
import { mailboxHeap } from "./mailbox-heap.js";
import { durablePipelined } from "./durable-pipelined.js";
import { durableSeq } from "./durable-seq.js";
import { mqttConns } from "./mqtt-conns.js";
import { mqttDurable } from "./mqtt-durable.js";
import { mqttQos0, mqttQos1 } from "./mqtt-pubsub.js";
import { pubonly } from "./pubonly.js";
import { pubsub } from "./pubsub.js";
import { replay } from "./replay.js";
import { reqrep } from "./reqrep.js";
import { rss } from "./rss.js";
import { rssStored } from "./rss-stored.js";
import { slowconsumer } from "./slowconsumer.js";
import { uplinkDrain } from "./uplink-drain.js";

/** Run order. */
export const SCENARIOS: Scenario[] = [ceiling, pubsub, pubonly, reqrep, rss, slowconsumer, durableSeq, durablePipelined, replay, rssStored, mailboxHeap, uplinkDrain, mqttQos0, mqttQos1, mqttConns, mqttDurable];
