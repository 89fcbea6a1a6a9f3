/*
 * Second-language NATS client for the conformance suite (nats.c / libnats).
 * Built at test time: gcc client.c -lnats. Usage: client nats://host:port
 *
 * Prints one line per observation; test/c-client.test.ts checks the output:
 *   plain <subject> <data>        messages on sync sub "c.plain"
 *   wild <subject> <data>         messages on sync sub "c.wild.*"
 *   full <subject> <data>         messages on sync sub "c.full.>"
 *   reply <data> X-Echo=<v> X-Reply=<v>   request/reply with headers
 *   noresp <status>               request to a subject nobody listens on
 *   done
 * Errors print "error <what>: <status text>" and exit 2.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>

#define CHECK(what, call)                                                      \
    do {                                                                       \
        natsStatus s_ = (call);                                                \
        if (s_ != NATS_OK) {                                                   \
            printf("error %s: %s\n", (what), natsStatus_GetText(s_));         \
            fflush(stdout);                                                    \
            exit(2);                                                           \
        }                                                                      \
    } while (0)

/* Responder for "c.svc": upper-cases the payload, echoes header X-Req as X-Echo. */
static void onRequest(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    (void)closure;
    char buf[256];
    int n = natsMsg_GetDataLength(msg);
    if (n > (int)sizeof(buf)) n = (int)sizeof(buf);
    const char *d = natsMsg_GetData(msg);
    for (int i = 0; i < n; i++) buf[i] = (char)toupper((unsigned char)d[i]);

    const char *req = NULL;
    if (natsMsgHeader_Get(msg, "X-Req", &req) != NATS_OK || req == NULL) req = "missing";

    natsMsg *reply = NULL;
    if (natsMsg_GetReply(msg) != NULL
        && natsMsg_Create(&reply, natsMsg_GetReply(msg), NULL, buf, n) == NATS_OK) {
        natsMsgHeader_Set(reply, "X-Echo", req);
        natsMsgHeader_Set(reply, "X-Reply", "yes");
        natsConnection_PublishMsg(nc, reply);
        natsMsg_Destroy(reply);
    }
    natsMsg_Destroy(msg);
}

/* Print every message pending on a sync subscription (stops after a 300 ms lull). */
static void drain(const char *label, natsSubscription *sub)
{
    natsMsg *msg = NULL;
    while (natsSubscription_NextMsg(&msg, sub, 300) == NATS_OK) {
        printf("%s %s %.*s\n", label, natsMsg_GetSubject(msg),
               natsMsg_GetDataLength(msg), natsMsg_GetData(msg));
        natsMsg_Destroy(msg);
        msg = NULL;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s nats://host:port\n", argv[0]);
        return 1;
    }
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    natsSubscription *plain = NULL, *wild = NULL, *full = NULL, *svc = NULL;

    CHECK("options", natsOptions_Create(&opts));
    CHECK("url", natsOptions_SetURL(opts, argv[1]));
    CHECK("timeout", natsOptions_SetTimeout(opts, 2000));
    CHECK("reconnect", natsOptions_SetAllowReconnect(opts, false));
    CHECK("connect", natsConnection_Connect(&nc, opts));

    CHECK("sub plain", natsConnection_SubscribeSync(&plain, nc, "c.plain"));
    CHECK("sub wild", natsConnection_SubscribeSync(&wild, nc, "c.wild.*"));
    CHECK("sub full", natsConnection_SubscribeSync(&full, nc, "c.full.>"));
    CHECK("sub svc", natsConnection_Subscribe(&svc, nc, "c.svc", onRequest, NULL));
    CHECK("flush subs", natsConnection_Flush(nc));

    CHECK("pub", natsConnection_PublishString(nc, "c.plain", "hello-plain"));
    CHECK("pub", natsConnection_PublishString(nc, "c.wild.one", "w1"));
    CHECK("pub", natsConnection_PublishString(nc, "c.wild.one.two", "no-match"));
    CHECK("pub", natsConnection_PublishString(nc, "c.wild", "no-match"));
    CHECK("pub", natsConnection_PublishString(nc, "c.full.a.b", "f1"));
    CHECK("pub", natsConnection_PublishString(nc, "c.full.x", "f2"));
    CHECK("pub", natsConnection_PublishString(nc, "c.full", "no-match"));
    CHECK("flush pubs", natsConnection_Flush(nc));

    drain("plain", plain);
    drain("wild", wild);
    drain("full", full);

    /* request/reply with headers */
    natsMsg *req = NULL, *rep = NULL;
    CHECK("create req", natsMsg_Create(&req, "c.svc", NULL, "ping", 4));
    CHECK("req header", natsMsgHeader_Set(req, "X-Req", "42"));
    CHECK("request", natsConnection_RequestMsg(&rep, nc, req, 2000));
    const char *echo = NULL, *rr = NULL;
    if (natsMsgHeader_Get(rep, "X-Echo", &echo) != NATS_OK || echo == NULL) echo = "none";
    if (natsMsgHeader_Get(rep, "X-Reply", &rr) != NATS_OK || rr == NULL) rr = "none";
    printf("reply %.*s X-Echo=%s X-Reply=%s\n", natsMsg_GetDataLength(rep), natsMsg_GetData(rep), echo, rr);
    natsMsg_Destroy(rep);
    natsMsg_Destroy(req);

    /* no responders */
    rep = NULL;
    natsStatus s = natsConnection_RequestString(&rep, nc, "c.nobody.home", "x", 2000);
    printf("noresp %s\n", s == NATS_NO_RESPONDERS ? "NO_RESPONDERS" : natsStatus_GetText(s));
    if (rep != NULL) natsMsg_Destroy(rep);

    /* a message with headers for the TypeScript side */
    natsMsg *out = NULL;
    CHECK("create out", natsMsg_Create(&out, "c.to-ts", NULL, "from-c", 6));
    CHECK("out header", natsMsgHeader_Set(out, "X-From", "nats.c"));
    CHECK("publish out", natsConnection_PublishMsg(nc, out));
    natsMsg_Destroy(out);
    CHECK("final flush", natsConnection_Flush(nc));

    printf("done\n");
    fflush(stdout);

    /* Close first, so that no callback of svc's delivery thread runs while things are
     * destroyed, then wait for the library's threads: exiting while one still ran killed
     * the process with a signal now and then after "done". */
    natsConnection_Close(nc);
    natsSubscription_Destroy(plain);
    natsSubscription_Destroy(wild);
    natsSubscription_Destroy(full);
    natsSubscription_Destroy(svc);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    if (nats_CloseAndWait(5000) != NATS_OK) {
        fprintf(stderr, "nats_CloseAndWait: the library's threads did not stop\n");
        return 1;
    }
    return 0;
}
