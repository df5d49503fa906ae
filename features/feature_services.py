from feast import FeatureService

from features.feature_views import item_embeddings, user_recent_items

recommender = FeatureService(
    name="llmseqrec_recommender",
    features=[item_embeddings, user_recent_items],
    description="Everything the sequential recommender reads: item embeddings and user histories",
)
