"""MQTT sink for plants that stream shop-floor events: one EPCIS document per message, QoS 1,
on a topic per site/line. Delivered only when the broker's PUBACK arrived."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from serialine.host.epcis import document as doc
from serialine.host.epcis.sinks import SinkError


class MqttSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 1883, site: str = "site",
                 line: str = "line", topic: str = "serialine/{site}/{line}/epcis",
                 username: str | None = None, password: str | None = None,
                 client_id: str = "", timeout: float = 10.0, tls_ca_file: str | None = None):
        self.topic = topic.format(site=site, line=line)
        self.timeout = timeout
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca_file:
            self.client.tls_set(ca_certs=tls_ca_file)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.reconnect_delay_set(min_delay=1, max_delay=4)
        self.host, self.port = host, port
        self._started = False

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if not reason_code.is_failure:
            self.connected.set()

    def _ensure_connected(self) -> None:
        if not self._started:
            try:
                self.client.connect_async(self.host, self.port, keepalive=30)
            except OSError as exc:
                raise SinkError(f"mqtt {self.host}:{self.port}: {exc}") from exc
            self.client.loop_start()
            self._started = True
        if not self.connected.wait(self.timeout):
            raise SinkError(f"mqtt {self.host}:{self.port}: not connected to the broker")

    def send(self, document: dict, name: str = "") -> None:
        self._ensure_connected()
        info = self.client.publish(self.topic, doc.dumps(document), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SinkError(f"mqtt publish to {self.topic}: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:
            raise SinkError(f"mqtt publish to {self.topic}: {exc}") from exc
        if not info.is_published():
            raise SinkError(f"mqtt publish to {self.topic}: no PUBACK within {self.timeout}s")

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False
