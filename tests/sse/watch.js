#!/usr/bin/env node
/*
 * watch.js: watches a call with a real Server-Sent Events client, the npm
 * package eventsource (the WHATWG EventSource for Node, at the version
 * package-lock.json pins; build.sh installs it into $VOICE_BUILD_DIR/sse,
 * which NODE_PATH names), the way an operator's dashboard would.  Used
 * by tests/e2e/test_live.py.
 *
 *   VOICE_API_TOKEN=... node watch.js URL [--close-after N]
 *       [--last-event-id ID] [--timeout SECONDS]
 *
 * Each event goes to stdout as one JSON line, {"type", "id", "data"}:
 * "open" each time the connection opens (again after a reconnection),
 * "error" each time it fails or ends (data: the client's message; the
 * client then reconnects on its own, sending Last-Event-ID), "utterance"
 * and "record" as the server sent them (id: the event's lastEventId).
 * The token comes from the environment, never the command line (ps
 * shows that).  The client is closed, and the script ends with status 0,
 * on the "record" event (the server then ends the stream, which the
 * client would take for a reason to reconnect) or after N utterances
 * with --close-after; status 1 when the client gives up (a status other
 * than 200: it does not reconnect then), 2 for bad arguments, 3 when
 * --timeout (60 s) passes first.
 *
 * --last-event-id sends Last-Event-ID on the first request, as a client
 * that kept the last id it saw across its own restart would; on a
 * reconnection the client sends its own.
 */

'use strict';

const { EventSource } = require('eventsource');

function usage(msg) {
    process.stderr.write('watch.js: ' + msg + '\n');
    process.exit(2);
}

function parseArgs(argv) {
    const opts = { url: null, closeAfter: 0, lastEventId: null, timeout: 60 };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const value = () => {
            if (i + 1 >= argv.length) usage(a + ' wants a value');
            return argv[++i];
        };
        if (a === '--close-after') {
            opts.closeAfter = Number(value());
        } else if (a === '--last-event-id') {
            opts.lastEventId = value();
        } else if (a === '--timeout') {
            opts.timeout = Number(value());
        } else if (!a.startsWith('--') && opts.url === null) {
            opts.url = a;
        } else {
            usage('unknown argument ' + a);
        }
    }
    if (opts.url === null) usage('no URL');
    if (!Number.isInteger(opts.closeAfter) || opts.closeAfter < 0)
        usage('--close-after wants a count');
    if (!(opts.timeout > 0)) usage('--timeout wants seconds');
    return opts;
}

function main() {
    const opts = parseArgs(process.argv.slice(2));
    const token = process.env.VOICE_API_TOKEN;
    if (!token) usage('VOICE_API_TOKEN is not set');

    /* the client's own request, with the bearer token added: eventsource
     * 3 and later take a fetch function for that (2 took headers) */
    const authorized = (url, init) => {
        const headers = { ...init.headers, Authorization: 'Bearer ' + token };
        if (opts.lastEventId !== null && !('Last-Event-ID' in headers))
            headers['Last-Event-ID'] = opts.lastEventId;
        return fetch(url, { ...init, headers });
    };

    const es = new EventSource(opts.url, { fetch: authorized });
    let utterances = 0;

    const print = (type, id, data) => {
        process.stdout.write(JSON.stringify({ type, id, data }) + '\n');
    };
    const finish = (code) => {
        es.close();
        clearTimeout(timer);
        process.exitCode = code;
    };
    const timer = setTimeout(() => {
        print('timeout', null, opts.timeout);
        finish(3);
    }, opts.timeout * 1000);

    es.addEventListener('open', () => print('open', null, null));
    es.addEventListener('error', (e) => {
        print('error', null, e.message === undefined ? null : e.message);
        /* CLOSED: the client gave up and will not reconnect */
        if (es.readyState === EventSource.CLOSED) finish(1);
    });
    es.addEventListener('utterance', (e) => {
        print('utterance', e.lastEventId, e.data);
        utterances++;
        if (opts.closeAfter > 0 && utterances >= opts.closeAfter) finish(0);
    });
    es.addEventListener('record', (e) => {
        print('record', e.lastEventId, e.data);
        finish(0);
    });
}

main();
