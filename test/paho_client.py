#!/usr/bin/python3
"""Paho MQTT (Debian python3-paho-mqtt 1.6) as a third client library for test/mqtt-interop.test.ts.

Prints one JSON object per line on stdout:
  {"event": "connack", "rc": 0, "session_present": false}
  {"event": "suback", "granted": [1]}            (sub, once subscribed: the test may publish now)
  {"event": "message", "topic": ..., "payload": ..., "qos": 1, "retain": false, "properties": {...}}
  {"event": "published", "mid": 1}               (pub, once the PUBACK/PUBCOMP arrived for QoS > 0)
  {"event": "error", "error": "..."}             (then exit status 1)

  paho_client.py pub --port P --version 5 --topic t --qos 1 --message hi [--retain] [--user-prop k=v]...
  paho_client.py sub --port P --version 311 --topic t --qos 2 --count 1 --timeout 5
  paho_client.py connect --port P --version 5 --username u --password p
"""

import argparse
import json
import sys
import time
import traceback

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def fail(msg):
    emit({"event": "error", "error": msg})
    sys.exit(1)


def props_json(props):
    if props is None:
        return {}
    out = {}
    for name in props.names.keys():
        key = name.replace(" ", "")
        if not hasattr(props, key):
            continue
        val = getattr(props, key)
        if key == "UserProperty":
            out[key] = [[k, v] for (k, v) in val]
        elif isinstance(val, bytes):
            out[key] = val.decode("utf-8", "replace")
        else:
            out[key] = val
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pub", "sub", "connect"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", choices=["311", "5"], default="311")
    ap.add_argument("--id", default="")
    ap.add_argument("--clean", type=int, default=1)
    ap.add_argument("--session-expiry", type=int, default=None)
    ap.add_argument("--username", default=None)
    ap.add_argument("--password", default=None)
    ap.add_argument("--topic", action="append", default=[])
    ap.add_argument("--qos", type=int, default=0)
    ap.add_argument("--message", default="")
    ap.add_argument("--retain", action="store_true")
    ap.add_argument("--user-prop", action="append", default=[])
    ap.add_argument("--content-type", default=None)
    ap.add_argument("--response-topic", default=None)
    ap.add_argument("--correlation-data", default=None)
    ap.add_argument("--expiry", type=int, default=None)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()

    v5 = a.version == "5"
    if v5:
        c = mqtt.Client(client_id=a.id, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(client_id=a.id, clean_session=bool(a.clean), protocol=mqtt.MQTTv311)
    if a.username is not None:
        c.username_pw_set(a.username, a.password)

    state = {"connack": None, "subscribed": False, "published": False, "messages": 0}

    def on_connect(client, userdata, flags, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else rc
        state["connack"] = code
        emit({"event": "connack", "rc": code, "session_present": bool(flags.get("session present"))})

    def on_subscribe(client, userdata, mid, granted, properties=None):
        g = [x.value if hasattr(x, "value") else x for x in granted]
        state["subscribed"] = True
        emit({"event": "suback", "granted": g})

    def on_message(client, userdata, msg):
        emit({
            "event": "message",
            "topic": msg.topic,
            "payload": msg.payload.decode("utf-8", "replace"),
            "qos": msg.qos,
            "retain": bool(msg.retain),
            "properties": props_json(getattr(msg, "properties", None)) if v5 else {},
        })
        state["messages"] += 1

    def on_publish(client, userdata, mid):
        state["published"] = True
        emit({"event": "published", "mid": mid})

    def on_disconnect(client, userdata, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else rc
        if code != 0:
            emit({"event": "error", "error": "disconnected: %s" % code})

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_publish = on_publish

    deadline = time.time() + a.timeout
    try:
        if v5:
            cp = None
            if a.session_expiry is not None:
                cp = Properties(PacketTypes.CONNECT)
                cp.SessionExpiryInterval = a.session_expiry
            c.connect(a.host, a.port, keepalive=30, clean_start=bool(a.clean), properties=cp)
        else:
            c.connect(a.host, a.port, keepalive=30)
    except Exception as e:  # noqa: BLE001
        fail("connect: %s" % e)

    def loop_until(cond):
        while not cond():
            if time.time() > deadline:
                return False
            try:
                rc = c.loop(timeout=0.05)
            except Exception as e:  # noqa: BLE001 - a packet Paho cannot handle
                tb = traceback.extract_tb(e.__traceback__)
                emit({"event": "error", "error": "paho raised %s: %s (in %s)" % (type(e).__name__, e, tb[-1].name if tb else "?")})
                sys.exit(1)
            if rc != mqtt.MQTT_ERR_SUCCESS and not cond():
                emit({"event": "error", "error": "connection lost: %s" % mqtt.error_string(rc)})
                return False
        return True

    if not loop_until(lambda: state["connack"] is not None):
        fail("no CONNACK")
    if state["connack"] != 0:
        sys.exit(2)

    if a.mode == "connect":
        c.disconnect()
        return

    if a.mode == "sub":
        if not a.topic:
            fail("sub needs --topic")
        c.subscribe([(t, a.qos) for t in a.topic])
        if not loop_until(lambda: state["subscribed"]):
            fail("no SUBACK")
        loop_until(lambda: state["messages"] >= a.count)
        c.disconnect()
        c.loop(timeout=0.1)
        return

    # pub
    pp = None
    if v5:
        pp = Properties(PacketTypes.PUBLISH)
        if a.user_prop:
            pp.UserProperty = [tuple(kv.split("=", 1)) for kv in a.user_prop]
        if a.content_type is not None:
            pp.ContentType = a.content_type
        if a.response_topic is not None:
            pp.ResponseTopic = a.response_topic
        if a.correlation_data is not None:
            pp.CorrelationData = a.correlation_data.encode("utf-8")
        if a.expiry is not None:
            pp.MessageExpiryInterval = a.expiry
        if pp.isEmpty():
            pp = None
    info = c.publish(a.topic[0], a.message.encode("utf-8"), qos=a.qos, retain=a.retain, properties=pp)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        fail("publish rc %d" % info.rc)
    if not loop_until(lambda: state["published"]):
        fail("publish not acknowledged")
    c.disconnect()
    c.loop(timeout=0.1)


if __name__ == "__main__":
    main()
