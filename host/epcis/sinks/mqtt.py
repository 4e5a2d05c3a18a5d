"""MQTT sink for plants that stream shop-floor events: one EPCIS document per message, QoS 1,
on a topic per site/line. Delivered only when the broker's PUBACK arrived. TLS (`tls=True`, or a
CA file) verifies the broker against the CA file or the system's; a client certificate is
optional. Username/password only over TLS or to loopback (sinks.check_address)."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from serialine.host.epcis import document as doc
from serialine.host.epcis.sinks import SinkError, check_address, redact


class MqttSink:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, site: str = "site",
                 line: str = "line", topic: str = "serialine/{site}/{line}/epcis",
                 username: str | None = None, password: str | None = None,
                 client_id: str = "", timeout: float = 10.0, tls: bool = False,
                 tls_ca_file: str | None = None, tls_certfile: str | None = None,
                 tls_keyfile: str | None = None):
        tls = tls or bool(tls_ca_file or tls_certfile)
        check_address(host, tls, bool(username or password), "mqtt")
        self.topic = topic.format(site=site, line=line)
        self.timeout = timeout
        self._secrets = [s for s in (password,) if s]
        self.connected = threading.Event()
        self.refused: str | None = None  # the broker's CONNACK reason when it refused us
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=tls_ca_file, certfile=tls_certfile, keyfile=tls_keyfile)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.reconnect_delay_set(min_delay=1, max_delay=4)
        self.host, self.port = host, port or (8883 if tls else 1883)
        self._started = False

    def error(self, message: str) -> SinkError:
        return SinkError(redact(message, self._secrets))

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
        else:
            self.refused = None
            self.connected.set()

    def _ensure_connected(self) -> None:
        if not self._started:
            try:  # the first connection in the foreground: a TLS or network failure says why
                self.client.connect(self.host, self.port, keepalive=30)
            except (OSError, ValueError) as exc:
                raise self.error(f"mqtt {self.host}:{self.port}: {exc}") from None
            self.client.loop_start()  # from here on paho reconnects by itself
            self._started = True
        deadline = time.monotonic() + self.timeout
        while not self.connected.wait(0.05) and not self.refused and time.monotonic() < deadline:
            pass
        if not self.connected.is_set():
            why = f"broker refused the connection: {self.refused}" if self.refused else "not connected to the broker"
            raise self.error(f"mqtt {self.host}:{self.port}: {why}")

    def send(self, document: dict, name: str = "") -> None:
        self._ensure_connected()
        info = self.client.publish(self.topic, doc.dumps(document), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise self.error(f"mqtt publish to {self.topic}: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:
            raise self.error(f"mqtt publish to {self.topic}: {exc}") from None
        if not info.is_published():
            raise self.error(f"mqtt publish to {self.topic}: no PUBACK within {self.timeout}s")

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False
