/*
 * mongo-java-server's H2 backend with what a catalog needs from a database and upstream leaves
 * out: non-unique secondary indexes (CompoundIndex); a query planner that uses an index when the
 * query constrains the index's fields among others (upstream uses one only when the query has
 * exactly the index's fields, so `{_id: x, version: v}` read the whole collection); replies that
 * are snapshots (see createQueryResult); documents and ids stored as BSON (BsonTypes) and unique
 * indexes kept in memory (HeapUniqueIndex), where upstream has H2 store and compare them by Java
 * serialization. Everything else (the file, its commits, the wire protocol) is upstream's.
 */
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;

import org.h2.mvstore.MVMap;
import org.h2.mvstore.MVStore;

import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.Index;
import de.bwaldvogel.mongo.backend.IndexKey;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.h2.H2Collection;
import de.bwaldvogel.mongo.backend.h2.H2Database;
import de.bwaldvogel.mongo.bson.Document;

final class ScaleshopH2Backend extends H2Backend {
    /** The store of the database being constructed (its constructor opens collections before its fields are set). */
    static final ThreadLocal<MVStore> OPENING = new ThreadLocal<>();

    ScaleshopH2Backend(MVStore store) {
        super(store);
    }

    @Override
    protected MongoDatabase openOrCreateDatabase(String databaseName) {
        OPENING.set(getMvStore());
        try {
            return new ScaleshopH2Database(databaseName, getMvStore(), getCursorRegistry());
        } finally {
            OPENING.remove();
        }
    }
}

final class ScaleshopH2Database extends H2Database {
    private final MVStore store;

    ScaleshopH2Database(String databaseName, MVStore store, CursorRegistry cursorRegistry) {
        super(databaseName, store, cursorRegistry);
        this.store = store;
    }

    @Override
    protected Index<Object> openOrCreateUniqueIndex(String collectionName, String indexName, List<IndexKey> keys,
                                                    boolean sparse) {
        return new HeapUniqueIndex<>(indexName, keys, sparse);
    }

    @Override
    protected Index<Object> openOrCreateSecondaryIndex(String collectionName, String indexName, List<IndexKey> keys,
                                                       boolean sparse) {
        return new CompoundIndex<>(indexName, keys, sparse);
    }

    @Override
    protected MongoCollection<Object> openOrCreateCollection(String collectionName, CollectionOptions options) {
        MVStore mvStore = store != null ? store : ScaleshopH2Backend.OPENING.get();
        // The map names of upstream's H2Database.openOrCreateCollection; its documents and ids stored as BSON.
        String fullName = getFullCollectionNamespace(collectionName);
        MVMap<Object, Document> dataMap = mvStore.openMap("databases." + fullName,
            new MVMap.Builder<Object, Document>().keyType(BsonTypes.IdType.INSTANCE).valueType(BsonTypes.DocumentType.INSTANCE));
        MVMap<String, Object> metaMap = mvStore.openMap("meta." + fullName);
        return new ScaleshopH2Collection(this, collectionName, options, dataMap, metaMap, cursorRegistry);
    }
}

final class ScaleshopH2Collection extends H2Collection {
    ScaleshopH2Collection(MongoDatabase database, String collectionName, CollectionOptions options,
                        MVMap<Object, Document> dataMap, MVMap<String, Object> metaMap, CursorRegistry cursorRegistry) {
        super(database, collectionName, options, dataMap, metaMap, cursorRegistry);
    }

    /**
     * The plan, in this order: walk an index in the sort's order (a page costs what it returns,
     * not what the query matches); else read the candidates one index names and sort them; else
     * read everything (upstream). Among indexes, the one that pins the most fields wins. Every
     * document read is checked against the whole query.
     */
    @Override
    protected QueryResult queryDocuments(Document query, Document orderBy, int numberToSkip, int limit, int batchSize,
                                         Document fieldSelector) {
        if (orderBy != null && !orderBy.isEmpty()) {
            Iterable<List<Object>> runs = null;
            int best = -1;
            for (Index<Object> index : getIndexes()) {
                if (index instanceof CompoundIndex<Object> compound) {
                    Iterable<List<Object>> found = compound.ordered(query, orderBy);
                    CompoundIndex.Plan plan = compound.plan(query);
                    int pinned = plan == null ? 0 : plan.equalityFields();
                    if (found != null && pinned > best) {
                        runs = found;
                        best = pinned;
                    }
                }
            }
            if (runs != null) {
                Comparator<Document> comparator = deriveComparator(orderBy);
                Stream<Document> documents = StreamSupport.stream(runs.spliterator(), false)
                    .flatMap(run -> run.stream().map(this::getDocument).sorted(comparator));
                return matchDocumentsFromStream(query, documents, numberToSkip, limit, batchSize, null, fieldSelector);
            }
        }
        Index<Object> chosen = null;
        int best = -1;
        for (Index<Object> index : getIndexes()) {
            Document onIndexFields = onFieldsOf(index, query);
            if (onIndexFields.isEmpty() || !index.canHandle(onIndexFields)) {
                continue;
            }
            int pinned = index instanceof CompoundIndex<Object> compound
                ? compound.plan(onIndexFields).equalityFields() : Integer.MAX_VALUE; // a unique key: one document
            if (pinned > best) {
                chosen = index;
                best = pinned;
            }
        }
        if (chosen != null) {
            return matchDocuments(query, chosen.getPositions(onFieldsOf(chosen, query)), orderBy, numberToSkip, limit,
                                  batchSize, fieldSelector);
        }
        return super.queryDocuments(query, orderBy, numberToSkip, limit, batchSize, fieldSelector);
    }

    private static Document onFieldsOf(Index<Object> index, Document query) {
        Document onIndexFields = new Document();
        for (IndexKey key : index.getKeys()) {
            if (query.containsKey(key.getKey())) {
                onIndexFields.put(key.getKey(), query.get(key.getKey()));
            }
        }
        return onIndexFields;
    }

    /** Counted from an index alone when it answers the query exactly; upstream does not hold the lock here. */
    @Override
    public synchronized int count(Document query, int skip, int limit) {
        if (query != null && !query.isEmpty() && skip <= 0 && limit <= 0) {
            for (Index<Object> index : getIndexes()) {
                if (index instanceof CompoundIndex<Object> compound) {
                    Integer count = compound.exactCount(query);
                    if (count != null) {
                        return count;
                    }
                }
            }
        }
        return super.count(query, skip, limit);
    }

    /**
     * Documents leave the lock as copies. Upstream answers with the stored objects themselves and
     * an update changes a stored object field by field, so a reply still being written to the wire
     * could show part or all of a later write: 2 to 18 of 1,600 concurrent findOneAndUpdate
     * replies did (tests/functional/test_storage.py). A copy is what the reply saw under the lock; and an
     * update of a copy read here stores that copy, leaving every earlier reply's object untouched.
     */
    @Override
    protected QueryResult createQueryResult(List<Document> matchedDocuments, int batchSize) {
        List<Document> copies = new ArrayList<>(matchedDocuments.size());
        for (Document document : matchedDocuments) {
            copies.add(document.cloneDeeply());
        }
        return super.createQueryResult(copies, batchSize);
    }

    @Override
    public synchronized Document findAndModify(Document query) {
        return super.findAndModify(query).cloneDeeply();
    }

    /** Built under the lock, so no write slips past an index while it is being filled. */
    @Override
    public synchronized void addIndex(Index<Object> index) {
        super.addIndex(index);
    }
}
