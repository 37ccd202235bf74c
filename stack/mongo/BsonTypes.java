/*
 * How the local database lays documents and their `_id`s into its H2 file: as BSON, with
 * mongo-java-server's own encoder and decoder. Upstream opens its maps with H2's default type,
 * which stores any class it does not know (Document, ObjectId) by Java serialization and, for
 * keys, compares them by serializing them again: that was most of the database's CPU for a
 * write, and twice the file size.
 */
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import org.h2.mvstore.WriteBuffer;
import org.h2.mvstore.type.BasicDataType;

import de.bwaldvogel.mongo.backend.ValueComparator;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.wire.bson.BsonDecoder;
import de.bwaldvogel.mongo.wire.bson.BsonEncoder;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;

final class BsonTypes {
    private BsonTypes() {
    }

    static byte[] encode(Document document) {
        ByteBuf buffer = Unpooled.buffer(256);
        try {
            BsonEncoder.encodeDocument(document, buffer);
            byte[] bytes = new byte[buffer.readableBytes()];
            buffer.readBytes(bytes);
            return bytes;
        } finally {
            buffer.release();
        }
    }

    static Document decode(ByteBuffer source) {
        int length = source.duplicate().order(ByteOrder.LITTLE_ENDIAN).getInt(); // BSON counts its own 4 bytes
        ByteBuffer slice = source.slice();
        slice.limit(length);
        source.position(source.position() + length);
        ByteBuf buffer = Unpooled.wrappedBuffer(slice);
        try {
            return BsonDecoder.decodeBson(buffer);
        } finally {
            buffer.release();
        }
    }

    /** A stored document. */
    static final class DocumentType extends BasicDataType<Document> {
        static final DocumentType INSTANCE = new DocumentType();

        @Override
        public int getMemory(Document document) {
            return 64 + 2 * encode(document).length; // sampled by H2 for its cache's size
        }

        @Override
        public void write(WriteBuffer buffer, Document document) {
            buffer.put(encode(document));
        }

        @Override
        public Document read(ByteBuffer buffer) {
            return decode(buffer);
        }

        @Override
        public Document[] createStorage(int size) {
            return new Document[size];
        }
    }

    /** A document's position: its `_id`, a BSON value, ordered the way MongoDB orders values. */
    static final class IdType extends BasicDataType<Object> {
        static final IdType INSTANCE = new IdType();
        private static final String FIELD = "_id";

        @Override
        public int getMemory(Object id) {
            return 48 + encode(new Document(FIELD, id)).length;
        }

        @Override
        public void write(WriteBuffer buffer, Object id) {
            buffer.put(encode(new Document(FIELD, id)));
        }

        @Override
        public Object read(ByteBuffer buffer) {
            return decode(buffer).get(FIELD);
        }

        @Override
        public int compare(Object a, Object b) {
            return ValueComparator.asc().compare(a, b);
        }

        @Override
        public Object[] createStorage(int size) {
            return new Object[size];
        }
    }
}
