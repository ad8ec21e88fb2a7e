// switchyard-client: the JavaScript client of the switchyard WebSocket broker.
export class Client {}
