/*
 * mqtt_load: the MQTT side of `make bench`, a load generator against libmosquitto.
 *
 * Why C: a Python MQTT client (paho) tops out far below Mosquitto, so a Python
 * load generator would measure Python, not the broker.  This program drives many
 * client connections from one thread with poll(2) and libmosquitto's external-loop
 * calls (mosquitto_loop_read / _write / _misc), so that one process holds 50
 * publishers or 50 subscribers without a thread per connection.
 *
 * Modes (each run as its own process; bench/peers/mosquitto.py starts them):
 *
 *   mqtt_load pub  --port P --prefix S --topics T --per-topic K --count C
 *                  [--window W] [--rate R] [--size B] [--qos Q] [--ack-file F]
 *       T*K publishers (K per topic), each publishing C messages of B bytes with at
 *       most W unacknowledged (QoS 1: acknowledged by PUBACK).  --rate paces the
 *       whole process at R messages/s, the publishers' phases spread evenly over
 *       the interval; without it they publish as fast as their windows allow.
 *       The first 8 bytes of each payload are the CLOCK_MONOTONIC time of the
 *       publish, in ns, which a subscriber in another process reads back.
 *
 *   mqtt_load sub  --port P --prefix S --topics T --per-topic N --expect E
 *                  [--qos Q] [--lat-file F] [--timeout SECONDS]
 *       T*N subscribers (N per topic).  Prints "ready" once every subscription is
 *       acknowledged, then counts deliveries until E have arrived (or nothing has
 *       arrived for --timeout seconds) and stores each delivery's latency.
 *
 *   mqtt_load idle --port P --conns N
 *       N connected clients doing nothing; prints "ready", exits when stdin closes.
 *
 * Each mode prints one JSON object on its last line of stdout.  Latencies go to
 * --lat-file / --ack-file as little-endian uint32 microseconds, so that Python
 * computes every system's percentiles the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MID_SLOTS 4096 /* ring of publish times per publisher, indexed by message id */
#define CONNECT_BATCH 100 /* connections opened before waiting for their CONNACKs */

typedef struct {
	struct mosquitto *mosq;
	int topic;
	int connected;
	int subscribed;
	long sent;
	long acked;
	int inflight;
	uint64_t next_at;  /* ns: when a paced publisher may publish next */
	uint64_t *sent_at; /* publish time of each in-flight message, by mid % MID_SLOTS */
} client_t;

typedef struct {
	uint32_t *v;
	size_t n, cap;
} samples_t;

static struct {
	const char *mode;
	const char *prefix;
	int port, topics, per_topic, window, size, qos, conns;
	long count, expect;
	double rate, timeout;
	const char *lat_file, *ack_file;
} opt = {.prefix = "bench", .port = 1883, .topics = 1, .per_topic = 1, .window = 32, .size = 1024,
         .qos = 1, .count = 1000, .timeout = 30.0};

static client_t *clients;
static int nclients;
static long delivered, acked_total;
static uint64_t first_delivery, last_delivery, last_ack;
static samples_t latencies, acks;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "mqtt_load %s: %s: %s\n", opt.mode, what, rc ? mosquitto_strerror(rc) : strerror(errno));
	exit(1);
}

static void add_sample(samples_t *s, uint64_t ns)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 65536;
		s->v = realloc(s->v, s->cap * sizeof *s->v);
		if (!s->v)
			die("out of memory", 0);
	}
	uint64_t us = ns / 1000;
	s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void write_samples(const char *path, const samples_t *s)
{
	if (!path)
		return;
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(s->v, sizeof *s->v, s->n, f) != s->n || fclose(f))
		die("writing samples", 0);
}

static void topic_name(char *buf, size_t len, int topic)
{
	snprintf(buf, len, "%s/%d", opt.prefix, topic);
}

/* ------------------------------------------------------------------ callbacks */

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
	client_t *c = obj;
	if (rc)
		die("connection refused", rc);
	c->connected = 1;
	if (strcmp(opt.mode, "sub") == 0) {
		char topic[256];
		topic_name(topic, sizeof topic, c->topic);
		int err = mosquitto_subscribe(mosq, NULL, topic, opt.qos);
		if (err)
			die("subscribe", err);
	}
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted)
{
	(void)mosq;
	(void)mid;
	client_t *c = obj;
	if (n < 1 || granted[0] != opt.qos)
		die("subscription not granted at the asked QoS", 0);
	c->subscribed = 1;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
	(void)mosq;
	(void)obj;
	uint64_t now = now_ns(), stamp;
	if (msg->payloadlen < (int)sizeof stamp)
		return;
	memcpy(&stamp, msg->payload, sizeof stamp);
	if (!first_delivery)
		first_delivery = now;
	last_delivery = now;
	delivered++;
	add_sample(&latencies, now > stamp ? now - stamp : 0);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
	(void)mosq;
	client_t *c = obj;
	uint64_t now = now_ns();
	add_sample(&acks, now - c->sent_at[mid % MID_SLOTS]);
	c->inflight--;
	c->acked++;
	acked_total++;
	last_ack = now;
}

/* ------------------------------------------------------------------ the event loop */

/* Read every complete packet a socket has; libmosquitto reads one per call. */
static void read_all(client_t *c)
{
	for (int k = 0; k < 4096; k++) {
		errno = 0;
		int rc = mosquitto_loop_read(c->mosq, 1);
		if (rc)
			die("read", rc);
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
	}
}

/* One poll(2) over every connection, at most `timeout_ns` long; then service them. */
static void service(struct pollfd *fds, uint64_t timeout_ns)
{
	for (int i = 0; i < nclients; i++) {
		fds[i].fd = clients[i].mosq ? mosquitto_socket(clients[i].mosq) : -1;
		fds[i].events = POLLIN | (clients[i].mosq && mosquitto_want_write(clients[i].mosq) ? POLLOUT : 0);
		fds[i].revents = 0;
	}
	struct timespec ts = {.tv_sec = (time_t)(timeout_ns / 1000000000u),
	                      .tv_nsec = (long)(timeout_ns % 1000000000u)};
	int ready = ppoll(fds, (nfds_t)nclients, &ts, NULL);
	if (ready < 0) {
		if (errno == EINTR)
			return;
		die("poll", 0);
	}
	for (int i = 0; i < nclients && ready > 0; i++) {
		if (!fds[i].revents)
			continue;
		ready--;
		if (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL))
			die("connection lost", 0);
		if (fds[i].revents & POLLIN)
			read_all(&clients[i]);
		if (fds[i].revents & POLLOUT) {
			int rc = mosquitto_loop_write(clients[i].mosq, 1);
			if (rc)
				die("write", rc);
		}
	}
}

static void keepalive(void)
{
	for (int i = 0; i < nclients; i++)
		if (clients[i].mosq)
			mosquitto_loop_misc(clients[i].mosq);
}

/* Open every connection in batches (so the broker's listen backlog never overflows). */
static void connect_all(struct pollfd *fds, int window)
{
	const char *role = opt.mode;
	for (int start = 0; start < nclients; start += CONNECT_BATCH) {
		int end = start + CONNECT_BATCH < nclients ? start + CONNECT_BATCH : nclients;
		for (int i = start; i < end; i++) {
			char id[64];
			snprintf(id, sizeof id, "%c%d-%d", role[0], (int)getpid(), i);
			client_t *c = &clients[i];
			c->mosq = mosquitto_new(id, true, c);
			if (!c->mosq)
				die("mosquitto_new", 0);
			mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
			mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
			mosquitto_int_option(c->mosq, MOSQ_OPT_SEND_MAXIMUM, window);
			mosquitto_connect_callback_set(c->mosq, on_connect);
			mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
			mosquitto_message_callback_set(c->mosq, on_message);
			if (opt.qos > 0) /* at QoS 0 libmosquitto reports every publish as sent at once */
				mosquitto_publish_callback_set(c->mosq, on_publish);
			int rc = mosquitto_connect(c->mosq, "127.0.0.1", opt.port, 600);
			if (rc)
				die("connect", rc);
			int fd = mosquitto_socket(c->mosq);
			int flags = fcntl(fd, F_GETFL);
			if (!(flags & O_NONBLOCK))
				fcntl(fd, F_SETFL, flags | O_NONBLOCK);
		}
		int saved = nclients;
		nclients = end; /* poll only what is open so far */
		uint64_t deadline = now_ns() + 30000000000u;
		for (;;) {
			int done = 1;
			for (int i = start; i < end; i++)
				if (!clients[i].connected || (strcmp(role, "sub") == 0 && !clients[i].subscribed))
					done = 0;
			if (done)
				break;
			if (now_ns() > deadline)
				die("connections not acknowledged within 30 s", 0);
			service(fds, 100000000u);
		}
		nclients = saved;
	}
}

static void setup(int n, int window)
{
	struct rlimit lim;
	if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
		lim.rlim_cur = lim.rlim_max;
		setrlimit(RLIMIT_NOFILE, &lim);
	}
	nclients = n;
	clients = calloc((size_t)n, sizeof *clients);
	struct pollfd *fds = calloc((size_t)n + 1, sizeof *fds);
	if (!clients || !fds)
		die("out of memory", 0);
	for (int i = 0; i < n; i++)
		clients[i].topic = i % opt.topics;
	connect_all(fds, window);
	free(fds);
}

/* ------------------------------------------------------------------ modes */

static int run_pub(void)
{
	int n = opt.topics * opt.per_topic;
	if (opt.window > MID_SLOTS)
		opt.window = MID_SLOTS;
	setup(n, opt.window);
	struct pollfd *fds = calloc((size_t)n, sizeof *fds);
	unsigned char *payload = calloc(1, (size_t)opt.size);
	if (!fds || !payload)
		die("out of memory", 0);
	for (int i = 0; i < opt.size; i++)
		payload[i] = (unsigned char)(i * 131 + 7); /* stands in for ciphertext: incompressible enough */
	uint64_t interval = opt.rate > 0 ? (uint64_t)(1e9 * n / opt.rate) : 0;
	uint64_t start = now_ns();
	for (int i = 0; i < n; i++) {
		clients[i].sent_at = calloc(MID_SLOTS, sizeof(uint64_t));
		if (!clients[i].sent_at)
			die("out of memory", 0);
		clients[i].next_at = start + (interval ? interval * (uint64_t)i / (uint64_t)n : 0);
	}
	long total = (long)n * opt.count;
	uint64_t last_misc = start;
	char topic[256];
	while (acked_total < total) {
		uint64_t now = now_ns(), wake = UINT64_MAX;
		for (int i = 0; i < n; i++) {
			client_t *c = &clients[i];
			while (c->sent < opt.count && c->inflight < opt.window && (!interval || c->next_at <= now)) {
				int mid = 0;
				topic_name(topic, sizeof topic, c->topic);
				uint64_t stamp = now_ns();
				memcpy(payload, &stamp, sizeof stamp);
				int rc = mosquitto_publish(c->mosq, &mid, topic, opt.size, payload, opt.qos, false);
				if (rc)
					die("publish", rc);
				c->sent_at[mid % MID_SLOTS] = stamp;
				c->sent++;
				if (opt.qos == 0) { /* no PUBACK will come: count it as acknowledged now */
					c->acked++;
					acked_total++;
					last_ack = stamp;
				} else {
					c->inflight++;
				}
				if (interval)
					c->next_at += interval;
			}
			if (interval && c->sent < opt.count && c->inflight < opt.window && c->next_at < wake)
				wake = c->next_at;
		}
		now = now_ns();
		uint64_t timeout = wake == UINT64_MAX ? 100000000u : (wake > now ? wake - now : 0);
		service(fds, timeout);
		if (now - last_misc > 1000000000u) {
			keepalive();
			last_misc = now;
		}
	}
	double elapsed = (double)(last_ack - start) / 1e9;
	write_samples(opt.ack_file, &acks);
	printf("{\"mode\": \"pub\", \"clients\": %d, \"sent\": %ld, \"acked\": %ld, \"elapsed_s\": %.6f, "
	       "\"acked_per_s\": %.1f}\n",
	       n, total, acked_total, elapsed, elapsed > 0 ? (double)acked_total / elapsed : 0.0);
	return 0;
}

static int run_sub(void)
{
	int n = opt.topics * opt.per_topic;
	setup(n, 65535);
	struct pollfd *fds = calloc((size_t)n, sizeof *fds);
	if (!fds)
		die("out of memory", 0);
	printf("ready\n");
	fflush(stdout);
	uint64_t idle_limit = (uint64_t)(opt.timeout * 1e9), last_event = now_ns(), last_misc = last_event;
	long seen = 0;
	while (delivered < opt.expect) {
		service(fds, 100000000u);
		uint64_t now = now_ns();
		if (delivered != seen) {
			seen = delivered;
			last_event = now;
		} else if (now - last_event > idle_limit) {
			break; /* the publisher stopped short, or the broker dropped messages: report what came */
		}
		if (now - last_misc > 1000000000u) {
			keepalive();
			last_misc = now;
		}
	}
	double elapsed = (double)(last_delivery - first_delivery) / 1e9;
	write_samples(opt.lat_file, &latencies);
	printf("{\"mode\": \"sub\", \"clients\": %d, \"expected\": %ld, \"delivered\": %ld, \"elapsed_s\": %.6f, "
	       "\"delivered_per_s\": %.1f}\n",
	       n, opt.expect, delivered, elapsed, elapsed > 0 ? (double)delivered / elapsed : 0.0);
	return delivered == opt.expect ? 0 : 2;
}

static int run_idle(void)
{
	int n = opt.conns;
	setup(n, 20);
	struct pollfd *fds = calloc((size_t)n + 1, sizeof *fds);
	if (!fds)
		die("out of memory", 0);
	printf("ready\n");
	fflush(stdout);
	/* Nothing to do but answer the broker; stop when the parent closes our stdin. */
	for (;;) {
		struct pollfd in = {.fd = 0, .events = POLLIN};
		if (poll(&in, 1, 0) > 0) {
			char buf[64];
			if (read(0, buf, sizeof buf) <= 0)
				break;
		}
		service(fds, 200000000u);
		keepalive();
	}
	printf("{\"mode\": \"idle\", \"clients\": %d}\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: mqtt_load pub|sub|idle [options]  (see the comment at the top of mqtt_load.c)\n");
		return 64;
	}
	opt.mode = argv[1];
	static const struct option longopts[] = {
	    {"port", required_argument, NULL, 'p'},     {"prefix", required_argument, NULL, 'P'},
	    {"topics", required_argument, NULL, 't'},   {"per-topic", required_argument, NULL, 'k'},
	    {"count", required_argument, NULL, 'c'},    {"window", required_argument, NULL, 'w'},
	    {"rate", required_argument, NULL, 'r'},     {"size", required_argument, NULL, 's'},
	    {"qos", required_argument, NULL, 'q'},      {"expect", required_argument, NULL, 'e'},
	    {"lat-file", required_argument, NULL, 'l'}, {"ack-file", required_argument, NULL, 'a'},
	    {"timeout", required_argument, NULL, 'T'},  {"conns", required_argument, NULL, 'n'},
	    {NULL, 0, NULL, 0}};
	int ch;
	optind = 2;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p': opt.port = atoi(optarg); break;
		case 'P': opt.prefix = optarg; break;
		case 't': opt.topics = atoi(optarg); break;
		case 'k': opt.per_topic = atoi(optarg); break;
		case 'c': opt.count = atol(optarg); break;
		case 'w': opt.window = atoi(optarg); break;
		case 'r': opt.rate = atof(optarg); break;
		case 's': opt.size = atoi(optarg); break;
		case 'q': opt.qos = atoi(optarg); break;
		case 'e': opt.expect = atol(optarg); break;
		case 'l': opt.lat_file = optarg; break;
		case 'a': opt.ack_file = optarg; break;
		case 'T': opt.timeout = atof(optarg); break;
		case 'n': opt.conns = atoi(optarg); break;
		default: return 64;
		}
	}
	if (opt.size < 8 || opt.topics < 1 || opt.per_topic < 1 || opt.window < 1) {
		fprintf(stderr, "mqtt_load: --size must be >= 8; --topics, --per-topic, --window >= 1\n");
		return 64;
	}
	mosquitto_lib_init();
	int rc;
	if (strcmp(opt.mode, "pub") == 0)
		rc = run_pub();
	else if (strcmp(opt.mode, "sub") == 0)
		rc = run_sub();
	else if (strcmp(opt.mode, "idle") == 0)
		rc = run_idle();
	else {
		fprintf(stderr, "mqtt_load: unknown mode %s\n", opt.mode);
		rc = 64;
	}
	fflush(stdout);
	/* Exit without tearing the connections down one by one: the broker sees them close. */
	_exit(rc);
}
